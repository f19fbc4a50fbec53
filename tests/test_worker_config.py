"""Issue 20: the workers' settings are one WorkerConfig, declared once, travelling as one JSON value."""

import subprocess
import sys

import pytest

from jupyter_taskq.workerconfig import WorkerConfig


def test_round_trip_and_defaults_declared_once():
    config = WorkerConfig(kill_grace=3, run_as_owner=True)
    assert WorkerConfig.from_json(config.to_json()) == config
    assert config.kill_grace == 3.0 and isinstance(config.kill_grace, float)
    assert WorkerConfig.default("kill_grace") == WorkerConfig().kill_grace == 2.0
    assert WorkerConfig.default("log_max_bytes") == 10 * 1024 * 1024


@pytest.mark.parametrize("text, said", [
    ('{"kill_grace": -1}', "kill_grace"),
    ('{"nope": 1}', "unknown worker setting"),
    ('{"run_as_owner": 1}', "must be a bool"),
    ('{"log_max_bytes": 1.5}', "must be a int"),
    ('{"idle_exit": 1e9}', "idle_exit"),
    ("[]", "JSON object"),
    ("{", "not JSON"),
])
def test_a_bad_configuration_is_refused_saying_what(text, said):
    with pytest.raises(ValueError, match=said):
        WorkerConfig.from_json(text)


def test_the_server_traits_take_their_defaults_from_it():
    from jupyter_taskq.server.app import TaskQueue

    for name in ("kill_grace", "log_max_bytes", "heartbeat_timeout", "workers_per_gpu", "cpu_workers"):
        assert TaskQueue.class_traits()[name].default_value == WorkerConfig.default(name), name


def test_the_worker_command_refuses_a_bad_flag_in_its_own_words():
    done = subprocess.run([sys.executable, "-m", "jupyter_taskq.worker", "--gpus", "",
                           "--idle-exit", "-5"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--idle-exit must be from 0 to 604800 seconds" in done.stderr, done.stderr
