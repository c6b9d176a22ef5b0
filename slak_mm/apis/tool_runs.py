"""Running ``tools/train.py`` and ``tools/test.py`` as subprocesses.

The demos (``tools/misc/demo.py``, ``tools/misc/demo_context.py``) train
and test configs this way, as a user would from the shell, and read the
test metrics off the log. The scripts are part of a source checkout, not
of an installed package: :func:`tool_script` finds them next to the
``slak_mm`` package and says so when they are not there.
"""

import os
import os.path as osp
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


#: The checkout that holds this package, if it is one (``tools/`` beside
#: ``slak_mm/``).
REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def tool_script(name: str, repo_root: str = REPO_ROOT) -> str:
    """The absolute path of ``tools/<name>`` in the source checkout.

    Args:
        name (str): Path under ``tools/``, e.g. ``'train.py'``.
        repo_root (str): The checkout; by default the one holding this
            package.

    Raises:
        FileNotFoundError: If the script is not there, e.g. for a
            pip-installed ``slak_mm``, which has no ``tools/``.
    """
    path = osp.join(repo_root, 'tools', name)
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'{path} does not exist: the tools/ scripts come with a source '
            'checkout of slak_mm, not with an installed package'
        )
    return path


def train_command(
    config: str, work_dir: str, cfg_options: Sequence[str] = ()
) -> List[str]:
    """``python <checkout>/tools/train.py CONFIG --work-dir DIR
    --cfg-options ...``.

    Raises:
        FileNotFoundError: Outside a source checkout (see
            :func:`tool_script`).
    """
    command = [
        sys.executable,
        tool_script('train.py'),
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
    """``python <checkout>/tools/test.py CONFIG CHECKPOINT --work-dir DIR
    --cfg-options ...``.

    Raises:
        FileNotFoundError: Outside a source checkout (see
            :func:`tool_script`).
    """
    command = [sys.executable, tool_script('test.py'), config, checkpoint]
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
        command (Sequence[str]): E.g. :func:`train_command`'s.
        cwd (str): Working directory (the demos use the repository root).
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
