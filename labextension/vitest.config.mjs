// The data layer (src/api.ts, poller.ts, model.ts, query.ts, format.ts) imports nothing from
// JupyterLab, so its tests run in plain Node.
export default { test: { include: ['test/**/*.test.ts'], environment: 'node' } };
