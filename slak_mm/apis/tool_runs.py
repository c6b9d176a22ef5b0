"""Running ``tools/train.py`` and ``tools/test.py`` as subprocesses.

The demos (``tools/misc/demo.py``, ``tools/misc/demo_context.py``) train
and test configs this way, as a user would from the shell, and read the
test metrics off the log.
"""

import os
import re
import subprocess
import sys
from typing import Callable, Dict, List, Optional, Sequence

#: Picks what to echo of an output line (None: nothing).
EchoFn = Callable[[str], Optional[str]]


def data_root_options(data_root: str) -> List[str]:
    """``--cfg-options`` that point the train, val and test datasets of a
    config at ``data_root``."""
    return [
        f'{loader}.dataset.data_root={data_root}'
        for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')
    ]


def train_command(
    config: str, work_dir: str, cfg_options: Sequence[str] = ()
) -> List[str]:
    """``python tools/train.py CONFIG --work-dir DIR --cfg-options ...``,
    to run from the repository root."""
    command = [
        sys.executable,
        'tools/train.py',
        config,
        '--work-dir',
        work_dir,
    ]
    return command + (['--cfg-options', *cfg_options] if cfg_options else [])


def test_command(
    config: str,
    checkpoint: str,
    work_dir: str,
    cfg_options: Sequence[str] = (),
) -> List[str]:
    """``python tools/test.py CONFIG CHECKPOINT --work-dir DIR
    --cfg-options ...``, to run from the repository root."""
    command = [sys.executable, 'tools/test.py', config, checkpoint]
    command += ['--work-dir', work_dir]
    return command + (['--cfg-options', *cfg_options] if cfg_options else [])


def run_tool(
    command: Sequence[str],
    cwd: str,
    echo: EchoFn,
    log_file: Optional[str] = None,
    env: Optional[Dict[str, str]] = None,
) -> str:
    """Runs ``command``, echoing chosen lines; returns the whole output.

    Args:
        command (Sequence[str]): E.g. ``[python, 'tools/train.py', CONFIG]``.
        cwd (str): Working directory (the repository root).
        echo (callable): ``line -> text to print or None``.
        log_file (str, optional): Also write the output here.
        env (dict, optional): Environment of the process.

    Raises:
        RuntimeError: If the command fails; the last 60 output lines are
            printed first.
    """
    lines: List[str] = []
    log = open(log_file, 'w') if log_file else None
    try:
        process = subprocess.Popen(
            list(command),
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for line in process.stdout:
            lines.append(line)
            if log is not None:
                log.write(line)
            shown = echo(line)
            if shown is not None:
                print(shown, flush=True)
        returncode = process.wait()
    finally:
        if log is not None:
            log.close()
    if returncode != 0:
        print(''.join(lines[-60:]))
        where = f' (log: {log_file})' if log_file else ''
        raise RuntimeError(
            f'{os.path.basename(command[1])} failed with exit code '
            f'{returncode}{where}'
        )
    return ''.join(lines)


def read_test_metrics(output: str) -> Dict[str, float]:
    """The metrics of the last ``Iter(test)`` line of a ``tools/test.py``
    log, e.g. ``{'aAcc': 97.1, 'mIoU': 88.5, 'mAcc': 92.0, ...}``.

    Raises:
        ValueError: If the output has no such line.
    """
    found = [line for line in output.splitlines() if 'Iter(test)' in line]
    if not found:
        raise ValueError('the output has no Iter(test) metrics line')
    metrics = found[-1].split('Iter(test)', 1)[1]
    return {
        name: float(value)
        for name, value in re.findall(r'(\w+): (-?[0-9.]+)', metrics)
    }
