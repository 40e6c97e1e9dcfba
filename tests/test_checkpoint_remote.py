"""http(s):// checkpoints: downloaded once into torch.hub's cache, then read safely.
Served by a loopback server in a thread; no network."""
import http.server
import io
import os
import socket
import threading

import pytest
import torch

from mmrepvgg.checkpoint import CheckpointError, checkpoint_local_path, load_checkpoint_file
from test_checkpoint_safe_io import os_system


def checkpoint_bytes(content):
    buffer = io.BytesIO()
    torch.save(content, buffer)
    return buffer.getvalue()


@pytest.fixture
def server(tmp_path, monkeypatch):
    """(base URL, {path: bytes} it serves, list of the paths it was asked for)."""
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    files, requests = {}, []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            if self.path not in files:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header('Content-Length', str(len(files[self.path])))
            self.end_headers()
            self.wfile.write(files[self.path])

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f'http://127.0.0.1:{httpd.server_port}', files, requests
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)


def test_url_is_downloaded_once_into_the_torch_hub_cache(server, tmp_path):
    base_url, files, requests = server
    files['/models/repvgg_a0.pth'] = checkpoint_bytes({'state_dict': {'w': torch.ones(3)}})
    url = f'{base_url}/models/repvgg_a0.pth'

    first = load_checkpoint_file(url)
    second = load_checkpoint_file(url)

    assert requests == ['/models/repvgg_a0.pth']
    for checkpoint in (first, second):
        torch.testing.assert_close(checkpoint['state_dict']['w'], torch.ones(3))
    cached = tmp_path / 'torch_home' / 'hub' / 'checkpoints' / 'repvgg_a0.pth'
    assert checkpoint_local_path(url) == str(cached)
    assert cached.read_bytes() == files['/models/repvgg_a0.pth']


def test_missing_url_gives_one_line_and_caches_nothing(server, tmp_path):
    base_url, _, _ = server
    with pytest.raises(CheckpointError, match=r'repvgg_b0.pth: download failed \(HTTP 404 '
                       r'Not Found\); check the URL') as error:
        load_checkpoint_file(f'{base_url}/repvgg_b0.pth')
    assert '\n' not in str(error.value)
    assert list((tmp_path / 'torch_home' / 'hub' / 'checkpoints').iterdir()) == []


def test_downloaded_checkpoint_that_would_run_code_is_refused(server, tmp_path):
    base_url, files, _ = server
    marker = tmp_path / 'PWNED'
    files['/evil.pth'] = checkpoint_bytes({'meta': os_system(marker)})
    with pytest.raises(CheckpointError, match=r'refused, it calls posix.system\(\.\.\.\)'):
        load_checkpoint_file(f'{base_url}/evil.pth')
    assert not marker.exists()


def test_download_whose_sha256_differs_from_its_file_name_is_refused(server, tmp_path):
    base_url, files, _ = server
    files['/repvgg_a0-deadbeef.pth'] = checkpoint_bytes({'w': torch.ones(1)})
    with pytest.raises(CheckpointError, match=r'repvgg_a0-deadbeef.pth: download is damaged '
                       r'\(invalid hash value \(expected "deadbeef"'):
        load_checkpoint_file(f'{base_url}/repvgg_a0-deadbeef.pth')
    assert list((tmp_path / 'torch_home' / 'hub' / 'checkpoints').iterdir()) == []


def test_unreachable_server_gives_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    with socket.socket() as closed:  # a port nothing listens on once closed
        closed.bind(('127.0.0.1', 0))
        port = closed.getsockname()[1]
    with pytest.raises(CheckpointError, match=r'a0.pth: cannot reach the server \(.*refused'
                       r'\); check the URL and the network') as error:
        load_checkpoint_file(f'http://127.0.0.1:{port}/a0.pth')
    assert '\n' not in str(error.value)


A0_CONFIG = 'configs/repvgg-A0_4xb64-coslr-120e_in1k.py'
A0_ZOO_NAME = 'repvgg-A0_3rdparty_4xb64-coslr-120e_in1k'


@pytest.fixture(scope='module')
def a0_train_checkpoint_bytes():
    from mmrepvgg.models import build_model, repvgg_classifier_cfg
    model = build_model(repvgg_classifier_cfg('A0'))
    return checkpoint_bytes({'state_dict': model.state_dict()})


def test_converter_reads_its_source_from_a_url(server, tmp_path, a0_train_checkpoint_bytes,
                                               capsys):
    from conftest import REPO_ROOT, load_tool
    base_url, files, requests = server
    files['/zoo/a0_train.pth'] = a0_train_checkpoint_bytes
    dst = tmp_path / 'a0_deploy.pth'

    tool = load_tool('tools/reparameterize_repvgg.py')
    assert tool.main([f'{REPO_ROOT}/{A0_CONFIG}', f'{base_url}/zoo/a0_train.pth',
                      str(dst)]) == 0

    assert requests == ['/zoo/a0_train.pth']
    assert 'fused 22 blocks' in capsys.readouterr().out
    assert 'backbone.stage_4.0.branch_reparam.weight' in \
        load_checkpoint_file(str(dst))['state_dict']


def test_zoo_name_reads_the_cached_download_of_its_published_url(server, tmp_path,
                                                                 a0_train_checkpoint_bytes):
    from mmrepvgg.checkpoint.remote import cached_checkpoint_path
    from mmrepvgg.model_zoo import checkpoint_file, checkpoint_source
    url = checkpoint_source(A0_ZOO_NAME)
    assert url.startswith('https://') and url.endswith('-883ab98c.pth')
    cached = cached_checkpoint_path(url)  # under the fixture's TORCH_HOME
    os.makedirs(os.path.dirname(cached))
    with open(cached, 'wb') as stream:
        stream.write(a0_train_checkpoint_bytes)

    assert checkpoint_file(A0_ZOO_NAME) == cached
    assert checkpoint_file(str(tmp_path / 'local.pth')) == str(tmp_path / 'local.pth')
