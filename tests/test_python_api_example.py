"""The README's Python snippet (docs/python_api_example.py, pasted there as is) runs as
written, twice in the same folder (the files it writes exist the second time)."""
import os
import subprocess
import sys

from conftest import REPO_ROOT


def test_readme_python_snippet_runs_twice_in_a_checkout(tool_env, tmp_path):
    with open(os.path.join(REPO_ROOT, 'docs', 'python_api_example.py')) as stream:
        snippet = stream.read()
    os.symlink(os.path.join(REPO_ROOT, 'configs'), tmp_path / 'configs')
    for _ in range(2):
        run = subprocess.run([sys.executable, '-c', snippet], cwd=tmp_path, env=tool_env,
                             capture_output=True, text=True)
        assert run.returncode == 0, run.stderr[-2000:]
        assert run.stdout.startswith('RepVGG-A0 22 blocks fused, max relative error ')
    assert (tmp_path / 'repvgg-A0-deploy-classifier.pth').is_file()


def test_readme_shows_the_snippet_that_is_run():
    with open(os.path.join(REPO_ROOT, 'docs', 'python_api_example.py')) as stream:
        snippet = stream.read()
    with open(os.path.join(REPO_ROOT, 'README.md')) as stream:
        readme = stream.read()
    assert f'```python\n{snippet.rstrip()}\n```' in readme
