# The dstack agent's machine image: AWS's Deep Learning Base AMI (NVIDIA driver, CUDA, Docker)
# plus Node 20, the agent bundle, Miniforge with one env per Python version, a shared pip cache,
# the dev environments' servers (code-server, JupyterLab, the Notebook) and the dstack-agent systemd
# unit. A spot instance started from it takes jobs seconds after boot.
#
# Built by scripts/build-ami.sh (which builds the agent bundle first and passes region, subnet and
# version). Written for Packer 1.6 (amazon-ebs built in, no `packer init`); see ami/README.md.

variable "region" {
  type        = string
  description = "AWS region to build in (and where the image is registered)."
  default     = "us-east-1"
}

variable "instance_type" {
  type        = string
  description = "Instance type of the temporary build machine; a GPU is not needed to build."
  default     = "c6i.xlarge"
}

variable "subnet_id" {
  type        = string
  description = "Subnet of the build machine (empty: the default VPC). It needs a route to the internet."
  default     = ""
}

variable "ssh_source_cidrs" {
  type        = list(string)
  description = "Who may reach the build machine's SSH port (Packer's temporary security group): set your address, e.g. [\"203.0.113.7/32\"]."
  default     = ["0.0.0.0/0"]
}

variable "version" {
  type        = string
  description = "The agent version (dist/agent-bundle/VERSION); names and tags the image."
}

variable "source_ami_name" {
  type        = string
  description = "Name filter of the base image, owned by Amazon; the newest match is used."
  default     = "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) *"
}

variable "volume_size_gb" {
  type        = number
  description = "Root volume size; must be at least the base image's snapshot size."
  default     = 100
}

locals {
  # 20240131T120000Z: AMI names allow letters, digits, dots and dashes but no colons.
  timestamp  = regex_replace(timestamp(), "[-:]", "")
  ami_name   = "dstack-agent-${var.version}-${local.timestamp}"
  bundle_dir = "${path.root}/../dist/agent-bundle"
  remote_dir = "/tmp/dstack-ami"
  image_tags = {
    "Name"                 = local.ami_name
    "dstack:role"          = "agent"
    "dstack:agent-version" = var.version
  }
}

source "amazon-ebs" "agent" {
  region                      = var.region
  instance_type               = var.instance_type
  subnet_id                   = var.subnet_id
  associate_public_ip_address = true
  ssh_username                = "ubuntu"
  ssh_timeout                 = "15m"
  # Packer 1.6 has no metadata_options (IMDSv2 for the build machine); it does have these two.
  temporary_security_group_source_cidrs = var.ssh_source_cidrs
  # The image's snapshot is encrypted (the account's default EBS key).
  encrypt_boot = true

  source_ami_filter {
    filters = {
      name                  = var.source_ami_name
      architecture          = "x86_64"
      "virtualization-type" = "hvm"
      "root-device-type"    = "ebs"
    }
    owners      = ["amazon"]
    most_recent = true
  }

  launch_block_device_mappings {
    device_name = "/dev/sda1"
    volume_size = var.volume_size_gb
    volume_type = "gp3"
    # gp3's baseline; Packer 1.6 insists on explicit values for gp3.
    iops                  = 3000
    throughput            = 125
    delete_on_termination = true
  }

  ami_name        = local.ami_name
  ami_description = "dstack agent ${var.version}: Deep Learning Base AMI + Node 20, Miniforge (Python 3.7-3.11), code-server, JupyterLab, Notebook, pre-pulled docker images, dstack-agent.service"
  tags            = local.image_tags
  snapshot_tags   = local.image_tags
  run_tags = {
    "Name"        = "packer-build ${local.ami_name}"
    "dstack:role" = "ami-build"
  }
}

build {
  sources = ["source.amazon-ebs.agent"]

  # The file provisioner copies a directory's contents (trailing slash) into an existing directory.
  provisioner "shell" {
    inline = ["mkdir -p ${local.remote_dir}/agent-bundle"]
  }

  provisioner "file" {
    source      = "${path.root}/"
    destination = local.remote_dir
  }

  provisioner "file" {
    source      = "${local.bundle_dir}/"
    destination = "${local.remote_dir}/agent-bundle"
  }

  # install-dev-servers.sh installs code-server with the same script CI uses.
  provisioner "file" {
    source      = "${path.root}/../scripts/install-code-server.sh"
    destination = "${local.remote_dir}/install-code-server.sh"
  }

  # provision.sh checks that the uploaded bundle is the version the image is named after.
  provisioner "shell" {
    inline = ["sudo DSTACK_AGENT_VERSION='${var.version}' bash ${local.remote_dir}/provision.sh"]
  }

  # The images suggested for `provider: docker` (ami/images.txt): a step of its own, the longest
  # one and the only one that needs Docker Hub.
  provisioner "shell" {
    inline = [
      "sudo bash ${local.remote_dir}/pull-images.sh",
      "rm -rf ${local.remote_dir}",
    ]
  }
}
