import { describe, expect, it } from 'vitest';
import {
  attemptLabel,
  deviceLabel,
  gpuHoldingLabel,
  gpuRequestLabel,
  waitingForText,
  formatBytes,
  imageLabel,
  serverPath,
  formatCreated,
  formatDuration,
  progressFraction,
  statusBarText,
  taskDuration,
  workerLabel
} from '../src/format';
import { STATUS_FILTERS, canCancel, canDelete, canRetry, cancellableSelection, clampPage, pageCount, rangeLabel, statusFilter } from '../src/query';
import type { Task } from '../src/types';

const NOW = Date.parse('2026-01-01T12:00:00Z');

describe('format', () => {
  it('formats durations at every scale', () => {
    expect(formatDuration(0.42)).toBe('0.4 s');
    expect(formatDuration(42.9)).toBe('42 s');
    expect(formatDuration(185)).toBe('3 min 05 s');
    expect(formatDuration(7380)).toBe('2 h 03 min');
    expect(formatDuration(null)).toBe('');
  });

  it('measures a running and a finished task', () => {
    const running = { started_at: '2026-01-01T11:59:30Z', ended_at: null };
    expect(taskDuration(running, NOW)).toBe(30);
    expect(taskDuration({ started_at: '2026-01-01T11:00:00Z', ended_at: '2026-01-01T11:00:05.500Z' }, NOW)).toBe(5.5);
    expect(taskDuration({ started_at: null, ended_at: null }, NOW)).toBeNull();
  });

  it('says how long ago a task was created', () => {
    expect(formatCreated('2026-01-01T11:59:50Z', NOW)).toBe('10 s ago');
    expect(formatCreated('2026-01-01T11:30:00Z', NOW)).toBe('30 min ago');
    expect(formatCreated('2026-01-01T09:00:00Z', NOW)).toBe('3 h ago');
  });

  it('labels attempts, workers, devices and progress', () => {
    expect(attemptLabel({ attempt: 1, max_retries: 3 })).toBe('1/4');
    expect(workerLabel({ worker: 'gpu1', gpu: 1 })).toBe('gpu1');
    expect(workerLabel({ worker: null, gpu: 1 })).toBe('any GPU');
    expect(deviceLabel({ pool: 'gpu', device: '0' })).toBe('GPU 0');
    expect(deviceLabel({ pool: 'cpu', device: null })).toBe('CPU');
    expect(deviceLabel({ pool: 'gpu', device: '1', model: 'NVIDIA A100-SXM4-80GB' })).toBe(
      'GPU 1 · NVIDIA A100-SXM4-80GB'
    );
    expect(progressFraction({ status: 'RUNNING', progress: { done: 1, total: 4, fraction: 0.25, message: null } })).toBe(0.25);
    expect(progressFraction({ status: 'COMPLETE', progress: null })).toBe(1);
    expect(progressFraction({ status: 'RUNNING', progress: null })).toBeNull();
    expect(formatBytes(2048)).toBe('2.0 KB');
  });

  it('writes the status bar text with failures since last looked', () => {
    const stats = { counts: { RUNNING: 2, PENDING: 5, RETRY: 1, FAILED: 3, TIMEOUT: 1 } };
    expect(statusBarText(stats, 4)).toBe('2 running · 6 queued');
    expect(statusBarText(stats, 2)).toBe('2 running · 6 queued · 2 failed');
    expect(statusBarText(null, null)).toBe('Task queue …');
  });
});

describe('query', () => {
  it('offers all, groups and single statuses', () => {
    expect(statusFilter('active').statuses).toEqual(['PENDING', 'RUNNING', 'RETRY']); // status.py's CANCELLABLE, in its order
    expect(statusFilter('FAILED').statuses).toEqual(['FAILED']);
    expect(statusFilter('nonsense').id).toBe('all');
    expect(STATUS_FILTERS.length).toBe(12);
  });

  it('counts and clamps pages', () => {
    expect(pageCount(0, 50)).toBe(1);
    expect(pageCount(10000, 50)).toBe(200);
    expect(clampPage(250, 10000, 50)).toBe(199);
    expect(clampPage(-1, 10, 50)).toBe(0);
    expect(rangeLabel(50, 50, 10000)).toBe('51–100 of 10,000');
    expect(rangeLabel(0, 0, 0)).toBe('no tasks');
  });

  it('allows the actions that fit the status', () => {
    expect(canCancel({ status: 'RUNNING' })).toBe(true);
    expect(canRetry({ status: 'RUNNING' })).toBe(false);
    expect(canRetry({ status: 'FAILED' })).toBe(true);
    expect(canDelete({ status: 'COMPLETE' })).toBe(true);
    const tasks = [
      { id: 'a', status: 'RUNNING' },
      { id: 'b', status: 'COMPLETE' }
    ] as Task[];
    expect(cancellableSelection(['a', 'b', 'z'], tasks)).toEqual(['a']);
  });
});

describe('serverPath', () => {
  it('turns the path a kernel recorded into the server path Lab opens', () => {
    expect(serverPath('/home/ada/work/nb/a.ipynb', '/home/ada/work')).toBe('nb/a.ipynb');
    expect(serverPath('/home/ada/work/nb/a.ipynb', '/home/ada/work/')).toBe('nb/a.ipynb');
    expect(serverPath('C:\\Users\\ada\\a.ipynb', 'C:\\Users\\ada')).toBe('a.ipynb');
    expect(serverPath('/home/ada/workshop/a.ipynb', '/home/ada/work')).toBe('/home/ada/workshop/a.ipynb');
    expect(serverPath('nb/a.ipynb', '/home/ada/work')).toBe('nb/a.ipynb');
  });
});

describe('imageLabel', () => {
  it('names a kernel, an interpreter, or the packages and Python of a built image', () => {
    const spec = { python_packages: [], python_version: null, kernel: null, python: null };
    expect(imageLabel({ ...spec, kernel: 'py312' })).toBe('kernel py312');
    expect(imageLabel({ ...spec, python: '/usr/bin/python3' })).toBe('/usr/bin/python3');
    expect(imageLabel({ ...spec, python_packages: ['packaging==21.0', 'six'], python_version: '3.11' })).toBe(
      'packaging==21.0, six, Python 3.11'
    );
    expect(imageLabel(spec)).toBe('(no packages)');
  });
});

describe('multi-GPU tasks (issue 26)', () => {
  it('says what a task asks for and where it waits', () => {
    expect(gpuRequestLabel({ gpu: 0 })).toBe('no');
    expect(gpuRequestLabel({ gpu: 1 })).toBe('any');
    expect(gpuRequestLabel({ gpu: 2 })).toBe('2 (any model)');
    expect(gpuRequestLabel({ gpu: 1, gpu_model: 'A100' })).toBe('A100');
    expect(gpuRequestLabel({ gpu: 4, gpu_model: 'A100' })).toBe('4 × A100');
    expect(workerLabel({ worker: null, gpu: 4 })).toBe('4 GPUs on one machine');
  });

  it('shows which task holds which GPUs on the tiles', () => {
    expect(gpuHoldingLabel({ pool: 'gpu', gpu_task: null, gpus: [] })).toBe('');
    expect(gpuHoldingLabel({ pool: 'gpu', gpu_task: 't', gpus: [1] })).toBe('');
    expect(gpuHoldingLabel({ pool: 'gpu', gpu_task: 't', gpus: [2, 3] })).toBe('GPUs 2,3');
    expect(gpuHoldingLabel({ pool: 'gpu', gpu_task: 't', gpus: [2, 3], lent: true })).toBe('in a gang (GPUs 2,3)');
    expect(gpuHoldingLabel({ pool: 'cpu', gpu_task: 't', gpus: [] })).toBe('');
  });

  it('says what a waiting gang waits for, in local time', () => {
    const until = new Date(2030, 0, 1, 14, 20).getTime() / 1000;
    expect(waitingForText({ waiting_for_gpus: null })).toBe('');
    expect(waitingForText({ waiting_for_gpus: { gpus: 4, busy: 3, until, message: 'x' } })).toBe(
      'waiting for 4 GPUs on one machine: 3 busy until about 14:20'
    );
    expect(waitingForText({ waiting_for_gpus: { gpus: 4, busy: 1, until: null, message: 'no known end' } })).toBe(
      'no known end'
    );
  });
});
