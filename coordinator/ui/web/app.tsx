import type { JSX } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { RunPage } from './run.js';
import { RunsPage } from './runs.js';
import { MachinesPage } from './machines.js';
import { CostPage } from './cost.js';
import { ServicesPage } from './services.js';
import { parseRoute, type Route } from './route.js';

/** The pages in the nav, in order: `#/<key>` shows `render()`. */
const PAGES: Array<{ key: string; label: string; render: () => JSX.Element }> = [
  { key: 'runs', label: 'Runs', render: () => <RunsPage /> },
  { key: 'machines', label: 'Machines', render: () => <MachinesPage /> },
  { key: 'cost', label: 'Cost', render: () => <CostPage /> },
  { key: 'services', label: 'Dev environments & ports', render: () => <ServicesPage /> },
];

const KEYS = PAGES.map((p) => p.key);

function useRoute(): Route {
  const [route, setRoute] = useState(parseRoute(location.hash, KEYS));
  useEffect(() => {
    const on = (): void => setRoute(parseRoute(location.hash, KEYS));
    addEventListener('hashchange', on);
    // A hash change between the first render and this effect fired no event this listener heard.
    on();
    return () => removeEventListener('hashchange', on);
  }, []);
  return route;
}

/** The app shell: the nav and the page the hash names. */
export function App(): JSX.Element {
  const route = useRoute();
  const current = route.page === 'run' ? 'runs' : route.page;
  return (
    <div class="shell">
      <header>
        <a class="brand" href="#/runs">
          dstack
        </a>
        <nav>
          {PAGES.map((p) => (
            <a key={p.key} href={`#/${p.key}`} data-nav={p.key} class={current === p.key ? 'active' : ''}>
              {p.label}
            </a>
          ))}
        </nav>
      </header>
      <main>{route.page === 'run' && route.runName ? <RunPage key={route.runName} runName={route.runName} /> : (PAGES.find((p) => p.key === route.page) ?? PAGES[0])?.render()}</main>
    </div>
  );
}
