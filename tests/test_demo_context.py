"""tools/misc/demo_context.py: the margin rule and one short run of its
path."""

import json
import os.path as osp

import pytest

from .tool_utils import load_tool


def load_demo():
    return load_tool('demo_context')


def test_margin_rule():
    demo = load_demo()
    scores = dict(a=dict(miou=60.0), b=dict(miou=49.0), c=dict(miou=50.0))
    message, passed = demo.check_margin(scores, 10.0)
    assert passed and '(b) by 11.00 and (c) by 10.00' in message
    scores['c']['miou'] = 50.5
    message, passed = demo.check_margin(scores, 10.0)
    assert not passed and message.startswith('FAILED')


def test_demo_runs_train_test_complexity_and_erf(tmp_path, capsys):
    """A few iterations of model (a) only: every step of the demo runs and
    the table and ERF heatmap come out (no margin check with --only)."""
    demo = load_demo()
    results = demo.main(
        ['--only', 'a', '--iters', '2', '--num-train', '8', '--num-val', '4',
         '--erf-images', '1', '--data-root', str(tmp_path / 'data'),
         '--work-dir', str(tmp_path / 'work')]
    )  # fmt: skip
    output = capsys.readouterr().out
    assert '(a) SLaK 51/49/47/13, dynamic sparse' in output
    assert 'constant (most frequent class)' in output
    result = results['a']
    assert 0 <= result['miou'] <= 100
    assert 0 < result['params_nonzero'] < result['params']
    assert 0 < result['macs_sparse'] < result['macs']
    assert osp.isfile(result['erf']['heatmap'])
    assert set(result['erf']['ratios']) == {0.2, 0.3, 0.5, 0.99}
    saved = json.loads((tmp_path / 'work' / 'results.json').read_text())
    assert saved['results']['a']['miou'] == pytest.approx(result['miou'])
