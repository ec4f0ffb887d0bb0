import { DescribeInstanceTypesCommand, DescribeSpotPriceHistoryCommand, type EC2Client, type InstanceTypeInfo } from '@aws-sdk/client-ec2';
import { GetProductsCommand, type PricingClient } from '@aws-sdk/client-pricing';
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
    let token: string | undefined;
    do {
      const page = await this.ec2
        .send(
          new DescribeInstanceTypesCommand({
            Filters: [
              { Name: 'current-generation', Values: ['true'] },
              { Name: 'processor-info.supported-architecture', Values: ['x86_64'] },
            ],
            MaxResults: 100,
            ...(token ? { NextToken: token } : {}),
          }),
        )
        .catch((e: unknown) => {
          throw wrapAws(e, 'describe EC2 instance types');
        });
      for (const t of page.InstanceTypes ?? []) {
        const m = toMachineType(t);
        if (m) out.push(m);
      }
      token = page.NextToken;
    } while (token);
    return out;
  }

  private async fetchSpot(): Promise<Map<string, number>> {
    const prices = new Map<string, number>();
    let token: string | undefined;
    const now = new Date();
    do {
      const page = await this.ec2
        .send(new DescribeSpotPriceHistoryCommand({ ProductDescriptions: ['Linux/UNIX'], StartTime: now, MaxResults: 1000, ...(token ? { NextToken: token } : {}) }))
        .catch((e: unknown) => {
          throw wrapAws(e, 'describe EC2 spot prices');
        });
      for (const p of page.SpotPriceHistory ?? []) {
        const price = Number(p.SpotPrice);
        if (!p.InstanceType || !Number.isFinite(price)) continue;
        prices.set(p.InstanceType, Math.min(price, prices.get(p.InstanceType) ?? Infinity));
      }
      token = page.NextToken || undefined;
    } while (token);
    return prices;
  }

  private async fetchOnDemand(): Promise<Map<string, number>> {
    const prices = new Map<string, number>();
    const match = (Field: string, Value: string) => ({ Type: 'TERM_MATCH' as const, Field, Value });
    let token: string | undefined;
    do {
      const page = await this.pricing
        .send(
          new GetProductsCommand({
            ServiceCode: 'AmazonEC2',
            Filters: [
              match('regionCode', this.region),
              match('operatingSystem', 'Linux'),
              match('tenancy', 'Shared'),
              match('preInstalledSw', 'NA'),
              match('capacitystatus', 'Used'),
              match('licenseModel', 'No License required'),
            ],
            FormatVersion: 'aws_v1',
            MaxResults: 100,
            ...(token ? { NextToken: token } : {}),
          }),
        )
        .catch((e: unknown) => {
          throw wrapAws(e, 'get EC2 on-demand prices');
        });
      for (const item of page.PriceList ?? []) {
        const parsed = onDemandPrice(typeof item === 'string' ? item : JSON.stringify(item));
        if (parsed) prices.set(parsed.instanceType, parsed.usdPerHour);
      }
      token = page.NextToken;
    } while (token);
    return prices;
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
