import { paginateDescribeInstanceTypes, paginateDescribeSpotPriceHistory, type EC2Client, type InstanceTypeInfo } from '@aws-sdk/client-ec2';
import { paginateGetProducts, type PricingClient } from '@aws-sdk/client-pricing';
import type { MachineType } from '../fleet/match.js';
import { wrapAws } from './errors.js';

/**
 * What EC2 offers in a region, from EC2's own APIs: instance types (DescribeInstanceTypes: current
 * generation, x86_64), current spot prices (DescribeSpotPriceHistory, the lowest over the zones) and
 * on-demand prices (the Pricing API's GetProducts for Linux, shared tenancy). Each is fetched once
 * per process.
 */
export class Ec2Catalog {
  private types: Promise<MachineType[]> | undefined;
  private spot: Promise<Map<string, number>> | undefined;
  private onDemand: Promise<Map<string, number>> | undefined;

  constructor(
    private readonly ec2: EC2Client,
    private readonly pricing: PricingClient,
    readonly region: string,
  ) {}

  machineTypes(): Promise<MachineType[]> {
    this.types ??= forgetOnFailure(this.fetchTypes(), () => (this.types = undefined));
    return this.types;
  }

  spotPrices(): Promise<Map<string, number>> {
    this.spot ??= forgetOnFailure(this.fetchSpot(), () => (this.spot = undefined));
    return this.spot;
  }

  onDemandPrices(): Promise<Map<string, number>> {
    this.onDemand ??= forgetOnFailure(this.fetchOnDemand(), () => (this.onDemand = undefined));
    return this.onDemand;
  }

  private async fetchTypes(): Promise<MachineType[]> {
    const out: MachineType[] = [];
    const filters = [
      { Name: 'current-generation', Values: ['true'] },
      { Name: 'processor-info.supported-architecture', Values: ['x86_64'] },
    ];
    await eachPage('describe EC2 instance types', paginateDescribeInstanceTypes({ client: this.ec2, pageSize: 100 }, { Filters: filters }), (page) => {
      for (const t of page.InstanceTypes ?? []) {
        const m = toMachineType(t);
        if (m) out.push(m);
      }
    });
    return out;
  }

  private async fetchSpot(): Promise<Map<string, number>> {
    const prices = new Map<string, number>();
    const pages = paginateDescribeSpotPriceHistory({ client: this.ec2, pageSize: 1000 }, { ProductDescriptions: ['Linux/UNIX'], StartTime: new Date() });
    await eachPage('describe EC2 spot prices', pages, (page) => {
      for (const p of page.SpotPriceHistory ?? []) {
        const price = Number(p.SpotPrice);
        if (!p.InstanceType || !Number.isFinite(price)) continue;
        prices.set(p.InstanceType, Math.min(price, prices.get(p.InstanceType) ?? Infinity));
      }
    });
    return prices;
  }

  private async fetchOnDemand(): Promise<Map<string, number>> {
    const prices = new Map<string, number>();
    const match = (Field: string, Value: string) => ({ Type: 'TERM_MATCH' as const, Field, Value });
    const filters = [
      match('regionCode', this.region),
      match('operatingSystem', 'Linux'),
      match('tenancy', 'Shared'),
      match('preInstalledSw', 'NA'),
      match('capacitystatus', 'Used'),
      match('licenseModel', 'No License required'),
    ];
    const pages = paginateGetProducts({ client: this.pricing, pageSize: 100 }, { ServiceCode: 'AmazonEC2', Filters: filters, FormatVersion: 'aws_v1' });
    await eachPage('get EC2 on-demand prices', pages, (page) => {
      for (const item of page.PriceList ?? []) {
        const parsed = onDemandPrice(typeof item === 'string' ? item : JSON.stringify(item));
        if (parsed) prices.set(parsed.instanceType, parsed.usdPerHour);
      }
    });
    return prices;
  }
}

/** Walks an SDK paginator, wrapping a failure on any page with its AWS code. */
export async function eachPage<T>(what: string, pages: AsyncIterable<T>, onPage: (page: T) => void): Promise<void> {
  try {
    for await (const page of pages) onPage(page);
  } catch (e) {
    throw wrapAws(e, what);
  }
}

/** A memoized fetch that a long-running coordinator retries after a failure instead of keeping it. */
function forgetOnFailure<T>(p: Promise<T>, forget: () => void): Promise<T> {
  p.catch(forget);
  return p;
}

function toMachineType(t: InstanceTypeInfo): MachineType | null {
  if (!t.InstanceType || !t.VCpuInfo?.DefaultVCpus || !t.MemoryInfo?.SizeInMiB) return null;
  const g = t.GpuInfo?.Gpus?.[0];
  return {
    instanceType: t.InstanceType,
    vcpus: t.VCpuInfo.DefaultVCpus,
    memoryMiB: t.MemoryInfo.SizeInMiB,
    gpu: g?.Name ? { name: g.Name, count: g.Count ?? 1, memoryMiB: g.MemoryInfo?.SizeInMiB ?? 0 } : null,
    spot: (t.SupportedUsageClasses ?? []).includes('spot'),
    onDemand: (t.SupportedUsageClasses ?? []).includes('on-demand'),
  };
}

interface PriceListItem {
  product?: { attributes?: Record<string, string> };
  terms?: { OnDemand?: Record<string, { priceDimensions?: Record<string, { unit?: string; pricePerUnit?: { USD?: string } }> }> };
}

/** The hourly USD price in one Pricing API product (a JSON string), if it is an instance-hour price. */
export function onDemandPrice(json: string): { instanceType: string; usdPerHour: number } | null {
  const item = JSON.parse(json) as PriceListItem;
  const instanceType = item.product?.attributes?.instanceType;
  if (!instanceType) return null;
  for (const term of Object.values(item.terms?.OnDemand ?? {})) {
    for (const dim of Object.values(term.priceDimensions ?? {})) {
      const usd = Number(dim.pricePerUnit?.USD);
      if (dim.unit === 'Hrs' && Number.isFinite(usd) && usd > 0) return { instanceType, usdPerHour: usd };
    }
  }
  return null;
}
