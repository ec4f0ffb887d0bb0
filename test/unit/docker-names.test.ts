import { expect } from 'chai';
import { registryOf, repositoryOf, shortRepository } from '../../agent/runtime/docker.js';

describe('docker runtime: image names', () => {
  it('the registry a login is for: Docker Hub however it is written, else the host part', () => {
    for (const image of ['ubuntu', 'ubuntu:22.04', 'pytorch/pytorch:2.0.1', 'docker.io/library/ubuntu:22.04', 'index.docker.io/nvidia/cuda:12.1.1', 'registry-1.docker.io/x/y']) {
      expect(registryOf(image), image).to.equal('https://index.docker.io/v1/');
    }
    expect(registryOf('127.0.0.1:5000/team/train:1')).to.equal('127.0.0.1:5000');
    expect(registryOf('ghcr.io/acme/train@sha256:abc')).to.equal('ghcr.io');
    expect(registryOf('localhost/train')).to.equal('localhost');
  });

  it('the repository of a reference, and its form in RepoDigests (Docker Hub without its host and library/)', () => {
    expect(repositoryOf('127.0.0.1:5000/team/train:1')).to.equal('127.0.0.1:5000/team/train');
    expect(repositoryOf('ubuntu@sha256:abc')).to.equal('ubuntu');
    expect(repositoryOf('127.0.0.1:5000/train')).to.equal('127.0.0.1:5000/train');
    expect(shortRepository('docker.io/library/ubuntu')).to.equal('ubuntu');
    expect(shortRepository('docker.io/nvidia/cuda')).to.equal('nvidia/cuda');
    expect(shortRepository('index.docker.io/library/python')).to.equal('python');
    expect(shortRepository('127.0.0.1:5000/library/x')).to.equal('127.0.0.1:5000/library/x');
    expect(shortRepository('ubuntu')).to.equal('ubuntu');
  });
});
