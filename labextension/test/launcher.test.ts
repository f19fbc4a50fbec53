import { describe, expect, it } from 'vitest';
import {
  groupWorkersByJob,
  jobGpusLabel,
  jobStateLabel,
  jobSummary,
  jobTimeLeftLabel,
  launcherName,
  launcherProblems
} from '../src/format';
import type { LauncherInfo, LauncherJob, WorkerInfo } from '../src/types';

function worker(name: string, extra: Partial<WorkerInfo> = {}): WorkerInfo {
  return {
    name,
    pool: 'gpu',
    device: '0',
    host: 'gpu07',
    pid: 1,
    busy: false,
    current_task: null,
    busy_since: null,
    last_heartbeat: null,
    alive: true,
    started_at: null,
    ...extra
  };
}

// As GET stats carries them (docs/slurm.md, "What you see").
const running: LauncherJob = {
  id: '1234',
  name: 'taskq-alice-3fa9c1-gpu',
  state: 'running',
  slurm_state: 'RUNNING',
  reason: null,
  node: 'gpu07',
  gpus: ['2'],
  time_left: 3400,
  workers: ['slurm-1234/gpu2'],
  busy: 1,
  model: null
};
const pending: LauncherJob = {
  id: '1235',
  state: 'pending',
  slurm_state: 'PENDING',
  reason: 'Resources',
  node: null,
  gpus: 2,
  time_left: null,
  workers: []
};

describe('launcher jobs in the worker tiles', () => {
  it('labels a job by its state, with Slurm reason only where it explains a wait or a failure', () => {
    expect(jobStateLabel(running)).toBe('running');
    expect(jobStateLabel(pending)).toBe('pending: Resources');
    expect(jobStateLabel({ state: 'failed', reason: 'NonZeroExitCode' })).toBe('failed: NonZeroExitCode');
    expect(jobStateLabel({ state: 'pending', reason: 'None' })).toBe('pending');
    expect(jobStateLabel({ state: 'ending', reason: 'Resources' })).toBe('ending');
  });

  it("names the job's GPU devices once known, else how many it asked for", () => {
    expect(jobGpusLabel(running)).toBe('GPU 2');
    expect(jobGpusLabel({ gpus: ['0', '1'] })).toBe('GPUs 0,1');
    expect(jobGpusLabel(pending)).toBe('2 GPUs');
    expect(jobGpusLabel({ gpus: 1 })).toBe('1 GPU');
    expect(jobGpusLabel({ gpus: 0 })).toBe('');
    expect(jobGpusLabel({ gpus: [] })).toBe('');
    expect(jobGpusLabel({ gpus: null })).toBe('');
  });

  it('shows time left only while the job runs', () => {
    expect(jobTimeLeftLabel(running)).toBe('56 min 40 s left');
    expect(jobTimeLeftLabel({ state: 'ending', time_left: 90 })).toBe('1 min 30 s left');
    expect(jobTimeLeftLabel(pending)).toBe('');
    expect(jobTimeLeftLabel({ state: 'running', time_left: null })).toBe('');
    expect(jobTimeLeftLabel({ state: 'failed', time_left: 10 })).toBe('');
  });

  it('sums a job up in one line: id, state, node, GPUs, time left', () => {
    expect(jobSummary(running, 'slurm')).toBe('Slurm job 1234 · running · gpu07 · GPU 2 · 56 min 40 s left');
    expect(jobSummary(pending, 'slurm')).toBe('Slurm job 1235 · pending: Resources · 2 GPUs');
    expect(launcherName('kubernetes')).toBe('Kubernetes');
  });

  it("puts each worker under the job whose workers list names it, the rest apart, jobs in the launcher's order", () => {
    const workers = [worker('cpu0', { pool: 'cpu', device: null }), worker('slurm-1234/gpu2', { device: '2', busy: true }), worker('slurm-99/gpu0')];
    const launcher: Pick<LauncherInfo, 'jobs'> = { jobs: [running, pending] };
    const { jobs, others } = groupWorkersByJob(workers, launcher);
    expect(jobs.map(g => [g.job.id, g.workers.map(w => w.name)])).toEqual([
      ['1234', ['slurm-1234/gpu2']],
      ['1235', []] // pending: a tile of its own, no worker yet
    ]);
    // A worker whose job the launcher no longer lists (it ended) is still shown, as a plain tile.
    expect(others.map(w => w.name)).toEqual(['cpu0', 'slurm-99/gpu0']);
  });

  it('leaves every worker apart without a launcher or without jobs', () => {
    const workers = [worker('gpu0'), worker('cpu0', { pool: 'cpu' })];
    expect(groupWorkersByJob(workers, undefined)).toEqual({ jobs: [], others: workers });
    expect(groupWorkersByJob(workers, { jobs: [] })).toEqual({ jobs: [], others: workers });
  });

  it("says what stops the launcher's jobs", () => {
    expect(launcherProblems(undefined)).toEqual([]);
    expect(launcherProblems({ kind: 'local', error: null, refused: {} })).toEqual([]);
    expect(
      launcherProblems({
        kind: 'slurm',
        error: 'sbatch failed: Socket timed out',
        refused: { gpu: 'Requested node configuration is not available' }
      })
    ).toEqual([
      'Slurm: sbatch failed: Socket timed out',
      'Slurm refuses the gpu worker job: Requested node configuration is not available'
    ]);
  });
});
