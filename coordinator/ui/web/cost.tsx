import type { JSX } from 'preact';
import { useEffect, useRef } from 'preact/hooks';
import type { Chart } from 'chart.js';
import { formatCost } from './format.js';
import { CostSchema } from './schemas.js';
import { usePoll } from './use-poll.js';

/** `GET /api/cost` (coordinator/ui/api-cost.ts). */
interface CostJson {
  days: Array<{ day: string; byWorkflow: Record<string, number> }>;
  total: number;
}

/** Distinct colours for the workflows' stacks, in order. */
const COLOURS = ['#4e79a7', '#f28e2b', '#59a14f', '#e15759', '#76b7b2', '#edc948', '#b07aa1', '#ff9da7', '#9c755f', '#bab0ac'];

/** The workflows that spent anything in the range, sorted. */
function workflowsOf(data: CostJson): string[] {
  return [...new Set(data.days.flatMap((d) => Object.keys(d.byWorkflow)))].sort();
}

/**
 * A stacked bar per day, one stack per workflow. chart.js is loaded here only (a dynamic import:
 * the bundler splits it into its own chunk, fetched when the cost page is first shown). It draws
 * on a canvas; the same numbers are in the table below it, as text.
 */
function CostChart({ data }: { data: CostJson }): JSX.Element {
  const canvas = useRef<HTMLCanvasElement>(null);
  const chart = useRef<Chart<'bar', number[], string> | undefined>(undefined);
  useEffect(() => {
    let cancelled = false;
    const workflows = workflowsOf(data);
    const labels = data.days.map((d) => d.day);
    const datasets = workflows.map((wf, i) => ({ label: wf, data: data.days.map((d) => d.byWorkflow[wf] ?? 0), backgroundColor: COLOURS[i % COLOURS.length] ?? '#888', stack: 'cost' }));
    void import('chart.js').then(({ Chart: ChartJs, BarController, BarElement, CategoryScale, LinearScale, Legend, Tooltip }) => {
      if (cancelled || !canvas.current) return;
      if (chart.current) {
        chart.current.data.labels = labels;
        chart.current.data.datasets = datasets;
        chart.current.update();
        return;
      }
      ChartJs.register(BarController, BarElement, CategoryScale, LinearScale, Legend, Tooltip);
      chart.current = new ChartJs(canvas.current, {
        type: 'bar',
        data: { labels, datasets },
        options: {
          animation: false,
          responsive: true,
          maintainAspectRatio: false,
          scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { callback: (v) => `$${String(v)}` } } },
          plugins: { tooltip: { callbacks: { label: (item) => `${item.dataset.label ?? ''}: ${formatCost(Number(item.raw))}` } } },
        },
      });
    });
    return () => {
      cancelled = true;
    };
  }, [data]);
  // The chart is destroyed with the page, not at each refresh.
  useEffect(
    () => () => {
      chart.current?.destroy();
      chart.current = undefined;
    },
    [],
  );
  return (
    <div class="chart" style={{ position: 'relative', height: '320px' }}>
      <canvas ref={canvas} data-testid="cost-chart" aria-label="Spend per day and workflow" role="img" />
    </div>
  );
}

/**
 * The cost page: spend per day and per workflow over the last 30 days, as a stacked bar chart and
 * as a table of the same numbers. Runs count on the day they ended, from the run index alone.
 * Refreshed every 5 s while shown.
 */
export function CostPage(): JSX.Element {
  const { data, error } = usePoll('api/cost?days=30', CostSchema);
  const workflows = data ? workflowsOf(data) : [];
  return (
    <section class="page cost">
      <h1>Cost, last 30 days</h1>
      {error !== undefined && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      <p>
        Total: <strong data-testid="cost-total">{data ? formatCost(data.total) : '…'}</strong>
        <span class="note"> (runs that ended on EC2 instances with a known price; local runs cost nothing here)</span>
      </p>
      {data && <CostChart data={data} />}
      <table data-testid="cost-table">
        <thead>
          <tr>
            <th>Day</th>
            {workflows.map((wf) => (
              <th key={wf} data-workflow={wf}>
                {wf}
              </th>
            ))}
            <th>Total</th>
          </tr>
        </thead>
        <tbody>
          {data?.days.map((d) => (
            <tr key={d.day} data-day={d.day}>
              <td data-col="day">{d.day}</td>
              {workflows.map((wf) => (
                <td key={wf} data-workflow={wf}>
                  {d.byWorkflow[wf] === undefined ? '-' : formatCost(d.byWorkflow[wf] ?? 0)}
                </td>
              ))}
              <td data-col="total">{Object.keys(d.byWorkflow).length === 0 ? '-' : formatCost(Object.values(d.byWorkflow).reduce((a, b) => a + b, 0))}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}
