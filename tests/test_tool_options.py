"""Every numeric option of every tool, given an absurd value (0, -1, 10**9, not a number),
is refused with one ``error:`` line and a non-zero exit before any work, never a traceback;
and a few other inputs of the same kind (issue 24). Run in process: each case stops at the
argument check."""
import contextlib
import io
import json
import os
import traceback

import pytest

from conftest import REPO_ROOT, load_tool

CONFIG = os.path.join(REPO_ROOT, 'configs', 'digits', 'repvgg-A0_digits.py')
ABSURD = ['0', '-1', str(10**9), 'many']

# (tool, the arguments before the option, the option, its absurd values)
NUMERIC_OPTIONS = [
    ('tools/demo.py', [], '--benchmark-batch', ABSURD),
    ('tools/dense_demo.py', [], '--num-train', ABSURD),
    ('tools/dense_demo.py', [], '--num-val', ABSURD),
    ('tools/dense_demo.py', [], '--seg-iters', ABSURD),
    ('tools/dense_demo.py', [], '--det-epochs', ABSURD),
    ('tools/dense_demo.py', [], '--benchmark-batch', ABSURD),
    ('tools/image_demo.py', ['IMAGES', CONFIG, 'CKPT'], '--topk', ABSURD),
    ('tools/image_demo.py', ['IMAGES', CONFIG, 'CKPT'], '--batch-size', ABSURD),
    ('tools/analysis_tools/get_flops.py', [CONFIG], '--shape',
     [['0', '0'], ['-1', '-1'], [str(10**9), str(10**9)], ['100000', '100000'],
      ['many', '32']]),
    ('tools/deployment/pytorch2onnx.py', [CONFIG, 'CKPT', 'OUT.onnx'], '--batch-size',
     ABSURD),
    ('tools/deployment/pytorch2onnx.py', [CONFIG, 'CKPT', 'OUT.onnx'], '--opset', ABSURD),
    ('tools/deployment/pytorch2onnx.py', [CONFIG, 'CKPT', 'OUT.onnx'], '--calib-images',
     ABSURD),
    ('tools/deployment/pytorch2onnx.py', [CONFIG, 'CKPT', 'OUT.onnx'], '--check-images',
     ABSURD),
    ('tools/deployment/pytorch2onnx.py', [CONFIG, 'CKPT', 'OUT.onnx'], '--shape',
     [['0', '0'], ['-1', '-1'], [str(10**9), str(10**9)]]),
    ('tools/deployment/test.py', [CONFIG, 'MODEL.onnx'], '--threads', ABSURD),
    ('tools/deployment/test.py', [CONFIG, 'MODEL.onnx'], '--calib-images', ABSURD),
]
CASES = [(tool, [*before, option, *(value if isinstance(value, list) else [value])])
         for tool, before, option, values in NUMERIC_OPTIONS for value in values]


def run_tool(tool: str, argv: list) -> tuple:
    """(exit status, stdout, stderr) of ``tool``'s ``main(argv)`` run in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = load_tool(tool).main(argv)
        except SystemExit as exit_info:  # argparse's errors, sys.exit('error: ...')
            status = exit_info.code
            if isinstance(status, str):
                print(status, file=err)
                status = 1
        except Exception:  # recorded as what a user would see: a traceback
            status = None
            traceback.print_exc(file=err)
    return status, out.getvalue(), err.getvalue()


def assert_one_error_line(status, out, err):
    assert status not in (0, None), err[-2000:]
    assert 'Traceback' not in out + err, err[-2000:]
    error_lines = [line for line in err.splitlines() if 'error: ' in line]
    assert len(error_lines) == 1 and err.rstrip().endswith(error_lines[0]), err


@pytest.mark.parametrize('tool, argv', CASES, ids=[f'{tool} {" ".join(argv[-2:])}'
                                                   for tool, argv in CASES])
def test_absurd_numeric_option_is_one_error_line(tool, argv):
    assert_one_error_line(*run_tool(tool, argv))


def test_demo_work_dir_that_is_a_file_is_one_error_line(tmp_path):
    work_dir = tmp_path / 'work'
    work_dir.write_text('notes')
    assert_one_error_line(*run_tool('tools/demo.py', ['--work-dir', str(work_dir)]))
    assert work_dir.read_text() == 'notes'


@pytest.mark.parametrize('content', [[1, 2, 3], 'text', 7])
def test_plot_benchmarks_on_json_that_is_not_an_object_is_one_error_line(tmp_path, content):
    results = tmp_path / 'benchmark.json'
    results.write_text(json.dumps(content))
    status, out, err = run_tool('benchmarks/plot_benchmarks.py',
                                [str(results), '--out-dir', str(tmp_path / 'plots')])
    assert_one_error_line(status, out, err)
    assert 'not the object benchmark.py --json writes' in err
    assert not (tmp_path / 'plots').exists()
