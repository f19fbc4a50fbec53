/** React hooks shared by the sidebar (panel.tsx) and the task outputs in notebooks (output.tsx). */

import * as React from 'react';

/** Re-renders whenever `model` says it changed; answers a number that changes with it. */
export function useModel(model: { subscribe(listener: () => void): () => void }): number {
  const [version, setVersion] = React.useState(0);
  React.useEffect(() => model.subscribe(() => setVersion(v => v + 1)), [model]);
  return version;
}

/** The time now, ticking once a second while `running` (durations shown tick without asking the server). */
export function useClock(running: boolean): number {
  const [now, setNow] = React.useState(Date.now());
  React.useEffect(() => {
    if (!running) {
      return;
    }
    const timer = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(timer);
  }, [running]);
  return running ? now : Date.now();
}
