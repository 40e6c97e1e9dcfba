"""The README's Python snippet (docs/python_api_example.py, pasted there as is) runs as
written, twice in the same folder (the files it writes exist the second time)."""
import os

from conftest import REPO_ROOT


def test_readme_python_snippet_runs_twice_in_a_checkout(tmp_path, monkeypatch, capsys):
    snippet_path = os.path.join(REPO_ROOT, 'docs', 'python_api_example.py')
    with open(snippet_path) as stream:
        snippet = compile(stream.read(), snippet_path, 'exec')
    os.symlink(os.path.join(REPO_ROOT, 'configs'), tmp_path / 'configs')
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        exec(snippet, {'__name__': '__main__'})  # in process: the snippet is plain Python
        assert capsys.readouterr().out.startswith(
            'RepVGG-A0 22 blocks fused, max relative error ')
    assert (tmp_path / 'repvgg-A0-deploy-classifier.pth').is_file()


def test_readme_shows_the_snippet_that_is_run():
    with open(os.path.join(REPO_ROOT, 'docs', 'python_api_example.py')) as stream:
        snippet = stream.read()
    with open(os.path.join(REPO_ROOT, 'README.md')) as stream:
        readme = stream.read()
    assert f'```python\n{snippet.rstrip()}\n```' in readme
