/**
 * The notebook widget's CSS, carried inside its bundle (widget.ts puts it in the page once): the widget
 * shows where JupyterLab's stylesheets are absent (VS Code, Notebook without our extension), and none of
 * it travels in the notebook's saved widget state.
 */
export const WIDGET_CSS = `
.jtq-widget { font-family: var(--jp-ui-font-family, sans-serif); font-size: var(--jp-ui-font-size1, 13px);
  color: var(--jp-ui-font-color1, #222); border: 1px solid var(--jp-border-color2, #ddd); border-radius: 4px;
  padding: 6px 10px; max-width: 720px; }
.jtq-head { display: flex; gap: 8px; align-items: center; flex-wrap: wrap; }
.jtq-name { font-weight: 600; }
.jtq-facts { color: var(--jp-ui-font-color2, #666); margin: 2px 0; }
.jtq-chip { border-radius: 10px; padding: 1px 8px; font-size: 11px; font-weight: 600; color: white; background: #888; }
.jtq-pending { background: #8a8f98; } .jtq-running { background: #1f6feb; } .jtq-complete { background: #2da44e; }
.jtq-retry { background: #bf8700; } .jtq-cancelled { background: #6e7781; } .jtq-timeout { background: #cf5f00; }
.jtq-expired { background: #8250df; } .jtq-failed { background: #cf222e; }
.jtq-actions { display: flex; gap: 6px; margin-top: 4px; }
.jtq-button { cursor: pointer; padding: 2px 10px; border-radius: 3px; border: 1px solid var(--jp-border-color1, #bbb);
  background: var(--jp-layout-color1, white); color: var(--jp-ui-font-color1, #222); }
.jtq-error summary { color: #cf222e; cursor: pointer; }
.jtq-traceback { font-family: var(--jp-code-font-family, monospace); font-size: 12px; white-space: pre-wrap;
  max-height: 300px; overflow: auto; background: var(--jp-layout-color2, #f6f8fa); padding: 6px; }
.jtq-message { font-style: italic; color: var(--jp-ui-font-color2, #666); }
.jtq-progress { width: 100%; height: 8px; }
.jtq-row { display: flex; gap: 8px; align-items: center; padding: 1px 0; }
.jtq-progress-row { display: flex; gap: 8px; align-items: center; }
.jtq-progress-row .jtq-progress { width: 240px; }
.jtq-outputs { margin: 2px 0; }
.jtq-download { color: var(--jp-content-link-color, #1a73e8); margin-right: 2px; }
.jtq-log-text { font-family: var(--jp-code-font-family, monospace); font-size: 12px; max-height: 200px; overflow: auto;
  white-space: pre-wrap; background: var(--jp-layout-color2, #f6f8fa); padding: 4px; margin: 2px 0; }
.jtq-gone { color: var(--jp-ui-font-color2, #666); font-style: italic; }
.jtq-error-line { color: #cf222e; }
`;
