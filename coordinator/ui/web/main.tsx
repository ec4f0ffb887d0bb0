import { render } from 'preact';
import { App } from './app.js';
import './style.css';

// The page's entry (bundled by `npm run build:ui` into dist/ui/app.js and app.css).
const root = document.getElementById('app');
if (root) render(<App />, root);
