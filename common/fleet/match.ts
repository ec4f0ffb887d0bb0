import { ResourceError } from '../errors.js';
import { sha256 } from '../hash.js';
import type { Offer, Placement } from '../ports.js';
import type { ResourceSpec } from '../spec/job-spec.js';

/** An instance type as the catalog describes it (from EC2's DescribeInstanceTypes). */
export interface MachineType {
  instanceType: string;
  vcpus: number;
  memoryMiB: number;
  /** GPUs of one model (EC2 instance types carry one model); memory is per GPU. */
  gpu: { name: string; count: number; memoryMiB: number } | null;
  spot: boolean;
  onDemand: boolean;
}

/** Hourly USD prices by instance type. */
export interface PriceBook {
  /** The lowest current spot price over the region's zones. */
  spot: Map<string, number>;
  onDemand: Map<string, number>;
}

/** How many of the cheapest matching types a fleet is offered (price-capacity-optimized picks among them). */
export const MAX_OFFERS = 8;

/** The profile id of a resource request: equal requests share a queue and a fleet. */
export function profileIdOf(r: ResourceSpec): string {
  const key = { cpu: r.cpu ?? null, memoryMiB: r.memoryMiB ?? null, gpu: r.gpu ?? null, interruptible: r.interruptible };
  return `p${sha256(JSON.stringify(key)).slice(0, 10)}`;
}

/** A profile's queues are `<prefix>-<profileId>-jobs` (and `-dlq`): the coordinator sends there, its agents receive there. */
export function profileQueuePrefix(queuePrefix: string, profileId: string): string {
  return `${queuePrefix}-${profileId}`;
}

const norm = (name: string): string => name.toLowerCase().replace(/[\s_-]/g, '');

function fits(r: ResourceSpec, t: MachineType): boolean {
  if (r.cpu !== undefined && t.vcpus < r.cpu) return false;
  if (r.memoryMiB !== undefined && t.memoryMiB < r.memoryMiB) return false;
  if (r.gpu) {
    if (!t.gpu || t.gpu.count < r.gpu.count) return false;
    if (r.gpu.name !== undefined && norm(t.gpu.name) !== norm(r.gpu.name)) return false;
    if (r.gpu.memoryMiB !== undefined && t.gpu.memoryMiB < r.gpu.memoryMiB) return false;
  }
  return true;
}

/** Says a resource request the way the workflow would write it. */
export function describeRequest(r: ResourceSpec): string {
  const parts: string[] = [];
  if (r.gpu) parts.push(`${r.gpu.count} × ${r.gpu.name ?? 'any'} GPU${r.gpu.memoryMiB ? ` with ${gib(r.gpu.memoryMiB)} each` : ''}`);
  if (r.cpu !== undefined) parts.push(`${r.cpu} CPUs`);
  if (r.memoryMiB !== undefined) parts.push(`${gib(r.memoryMiB)} memory`);
  parts.push(r.interruptible ? 'spot' : 'on-demand');
  return parts.join(', ');
}

const gib = (mib: number): string => `${Math.round((mib / 1024) * 10) / 10} GiB`;

/**
 * The cheapest instance types that satisfy `r` in its market (spot when interruptible, else
 * on-demand), cheapest first; a ResourceError naming what comes closest when none does.
 */
export function placeRequest(r: ResourceSpec, types: MachineType[], prices: PriceBook, region: string): Placement {
  const market = r.interruptible ? 'spot' : 'on-demand';
  const book = r.interruptible ? prices.spot : prices.onDemand;
  const offers: Offer[] = [];
  for (const t of types) {
    const price = book.get(t.instanceType);
    if (!fits(r, t) || price === undefined || !(r.interruptible ? t.spot : t.onDemand)) continue;
    offers.push({ instanceType: t.instanceType, market, pricePerHour: price, vcpus: t.vcpus, memoryMiB: t.memoryMiB, gpu: t.gpu });
  }
  offers.sort((a, b) => a.pricePerHour - b.pricePerHour || a.instanceType.localeCompare(b.instanceType));
  if (offers.length === 0) throw new ResourceError(`no EC2 instance type in ${region} offers ${describeRequest(r)}: ${closest(r, types)}`);
  return { profileId: profileIdOf(r), offers: offers.slice(0, MAX_OFFERS) };
}

function closest(r: ResourceSpec, types: MachineType[]): string {
  if (r.gpu?.name !== undefined) {
    const same = types.filter((t) => t.gpu && norm(t.gpu.name) === norm(r.gpu?.name ?? ''));
    if (same.length === 0) {
      const names = [...new Set(types.flatMap((t) => (t.gpu ? [t.gpu.name] : [])))].sort();
      return `there is no \`${r.gpu.name}\` GPU; the GPUs are ${names.join(', ')}`;
    }
    const top = same.reduce((a, b) => ((b.gpu?.count ?? 0) > (a.gpu?.count ?? 0) ? b : a));
    return `the largest with ${r.gpu.name} is ${top.instanceType} (${top.gpu?.count ?? 0} × ${gib(top.gpu?.memoryMiB ?? 0)}, ${top.vcpus} CPUs, ${gib(top.memoryMiB)}); lower \`resources\` in the workflow`;
  }
  const biggest = types.reduce((a, b) => (b.vcpus > a.vcpus ? b : a), types[0] ?? { instanceType: '-', vcpus: 0, memoryMiB: 0, gpu: null, spot: false, onDemand: false });
  return `the largest is ${biggest.instanceType} (${biggest.vcpus} CPUs, ${gib(biggest.memoryMiB)}); lower \`resources\` in the workflow`;
}
