"""The front end's status sets and task option fields (labextension/src/generated.ts) are generated from
jupyter_taskq/status.py and options.py: this fails when the committed file is stale."""

from __future__ import annotations

from jupyter_taskq import tsgen


def test_generated_typescript_matches_status_and_options():
    assert tsgen.TARGET.read_text() == tsgen.render(), "run `python -m jupyter_taskq.tsgen` and commit the file"


def test_it_names_every_status_set_and_rest_option():
    from jupyter_taskq.options import OPTIONS
    from jupyter_taskq.status import FINAL, TaskStatus

    text = tsgen.render()
    assert all(f'"{s.value}"' in text for s in TaskStatus)
    final_line = next(line for line in text.splitlines() if line.startswith("export const FINAL"))
    assert all(f'"{s.value}"' in final_line for s in FINAL) and '"RUNNING"' not in final_line
    assert all(f"  {o.name}?:" in text for o in OPTIONS if o.rest)
    assert "on_start" not in text  # travels in the payload, not over REST
