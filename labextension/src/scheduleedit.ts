/**
 * Editing a schedule from the panel (issue 24: "paused, resumed, edited and deleted at run time"): the form's
 * draft and the `PATCH schedules/{id}` body it makes. Only what changed is sent, so saving a form whose
 * name alone changed leaves the schedule's timing (and its next run) as it was. The server checks every
 * value (cron.py); its 400 message is what the form shows, so no rule is written twice here.
 */

import type { Schedule } from './types';

export type ScheduleChanges = Partial<Pick<Schedule, 'cron' | 'name' | 'catch_up'>> & { every?: string | number };

/** What the edit form holds: text as typed. */
export interface ScheduleDraft {
  name: string;
  /** Which timing the schedule uses: a cron expression or an interval. */
  mode: 'cron' | 'every';
  cron: string;
  /** Seconds, or a duration the server reads ("90", "15m", "1h30m"). */
  every: string;
  catch_up: string;
}

/** The form's starting values: the schedule as it is. */
export function draftOf(s: Schedule): ScheduleDraft {
  return {
    name: s.name ?? '',
    mode: s.cron ? 'cron' : 'every',
    cron: s.cron ?? '',
    every: s.every !== null && s.every !== undefined ? String(s.every) : '',
    catch_up: s.catch_up
  };
}

/** The PATCH body: the fields the draft changes (empty: nothing to send). A blank name clears it. */
export function scheduleChanges(s: Schedule, draft: ScheduleDraft): ScheduleChanges {
  const changes: ScheduleChanges = {};
  const name = draft.name.trim();
  if (name !== (s.name ?? '')) {
    changes.name = name || null;
  }
  if (draft.mode === 'cron') {
    const cron = draft.cron.trim().replace(/\s+/g, ' ');
    if (!s.cron || cron !== s.cron) {
      changes.cron = cron; // blank: the server says a schedule needs one
    }
  } else {
    const every = draft.every.trim();
    if (s.cron || every !== String(s.every ?? '')) {
      changes.every = /^\d+(\.\d+)?$/.test(every) ? Number(every) : every;
    }
  }
  if (draft.catch_up !== s.catch_up) {
    changes.catch_up = draft.catch_up;
  }
  return changes;
}
