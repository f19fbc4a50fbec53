/** The Task Queue icon: a stack of queued jobs with a play mark; `jp-icon3` follows the theme. */

import { LabIcon } from '@jupyterlab/ui-components';

const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <rect x="2" y="4" width="13" height="3" rx="1"/>
    <rect x="2" y="10.5" width="13" height="3" rx="1"/>
    <rect x="2" y="17" width="13" height="3" rx="1"/>
    <path d="M17 8.5v7l5.5-3.5z"/>
  </g>
</svg>`;

export const queueIcon = new LabIcon({ name: 'jupyter-taskq:queue', svgstr: svg });
