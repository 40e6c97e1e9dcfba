"""http(s):// checkpoints: downloaded once into the project's own cache (never torch
hub's), bounded in time and size, named by content hash, removed when refused. Served by a
loopback server in a thread; no network."""
import hashlib
import http.server
import io
import os
import socket
import threading

import pytest
import torch

from mmrepvgg.checkpoint import CheckpointError, load_checkpoint_file
from mmrepvgg.checkpoint.fitting import checkpoint_file
from mmrepvgg.checkpoint import _reader as reader, _remote as remote
from test_checkpoint_safe_io import os_system


def checkpoint_bytes(content):
    buffer = io.BytesIO()
    torch.save(content, buffer)
    return buffer.getvalue()


@pytest.fixture
def server(tmp_path, monkeypatch):
    """(base URL, {path: bytes or handler} it serves, list of the paths it was asked for);
    the project's cache and torch hub's both under tmp_path."""
    monkeypatch.setenv('MMREPVGG_CACHE', str(tmp_path / 'cache'))
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    files, requests = {}, []
    release = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            served = files.get(self.path)
            if served is None:
                self.send_error(404)
            elif callable(served):
                served(self, release)
            else:
                self.send_response(200)
                self.send_header('Content-Length', str(len(served)))
                self.end_headers()
                self.wfile.write(served)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f'http://127.0.0.1:{httpd.server_port}', files, requests
    release.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)


def cache_entries(tmp_path):
    folder = tmp_path / 'cache' / 'checkpoints'
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


def test_url_is_downloaded_once_into_the_projects_cache_named_by_content(server, tmp_path):
    base_url, files, requests = server
    content = checkpoint_bytes({'state_dict': {'w': torch.ones(3)}})
    files['/models/repvgg_a0.pth'] = content
    url = f'{base_url}/models/repvgg_a0.pth'

    first = load_checkpoint_file(url)
    second = load_checkpoint_file(url)

    assert requests == ['/models/repvgg_a0.pth']
    for checkpoint in (first, second):
        torch.testing.assert_close(checkpoint['state_dict']['w'], torch.ones(3))
    cached = checkpoint_file(url)
    assert os.path.dirname(cached) == str(tmp_path / 'cache' / 'checkpoints')
    assert os.path.basename(cached).endswith(f'-{hashlib.sha256(content).hexdigest()}.pth')
    assert not (tmp_path / 'torch_home').exists()  # torch hub's folder is never used


def test_a_download_is_parsed_once_and_a_cached_file_once_per_load(server, monkeypatch):
    base_url, files, _ = server
    files['/repvgg_a0.pth'] = checkpoint_bytes({'w': torch.ones(2)})
    parsed = []
    real_read = reader._read_checkpoint

    def counting_read(path):
        parsed.append(path)
        return real_read(path)

    monkeypatch.setattr(reader, '_read_checkpoint', counting_read)
    for expected_parses in (1, 2):  # downloaded and verified, then read from the cache
        torch.testing.assert_close(load_checkpoint_file(f'{base_url}/repvgg_a0.pth')['w'],
                                   torch.ones(2))
        assert len(parsed) == expected_parses


@pytest.mark.parametrize('file_name', ['..', '.', '', 'a%2F..%2F..%2Fb.pth'])
def test_url_file_names_choose_no_path(server, tmp_path, file_name):
    base_url, files, _ = server
    files[f'/{file_name}'] = checkpoint_bytes({'w': torch.ones(1)})
    checkpoint = load_checkpoint_file(f'{base_url}/{file_name}')
    torch.testing.assert_close(checkpoint['w'], torch.ones(1))
    assert len(cache_entries(tmp_path)) == 1


def test_missing_url_gives_one_line_and_caches_nothing(server, tmp_path):
    base_url, _, _ = server
    with pytest.raises(CheckpointError, match=r'repvgg_b0.pth: download failed \(HTTP 404 '
                       r'Not Found\); check the URL') as error:
        load_checkpoint_file(f'{base_url}/repvgg_b0.pth')
    assert '\n' not in str(error.value)
    assert cache_entries(tmp_path) == []


def test_downloaded_checkpoint_that_would_run_code_is_refused_and_removed(server, tmp_path):
    base_url, files, _ = server
    marker = tmp_path / 'PWNED'
    files['/evil.pth'] = checkpoint_bytes({'meta': os_system(marker)})
    with pytest.raises(CheckpointError, match=r'refused, it calls posix.system'):
        load_checkpoint_file(f'{base_url}/evil.pth')
    assert not marker.exists()
    assert cache_entries(tmp_path) == []


def test_download_whose_sha256_differs_from_its_file_name_is_refused(server, tmp_path):
    base_url, files, _ = server
    files['/repvgg_a0-deadbeef.pth'] = checkpoint_bytes({'w': torch.ones(1)})
    with pytest.raises(CheckpointError, match=r'repvgg_a0-deadbeef.pth: download is damaged '
                       r'\(its SHA-256 starts with [0-9a-f]{8}, the file name says deadbeef'):
        load_checkpoint_file(f'{base_url}/repvgg_a0-deadbeef.pth')
    assert cache_entries(tmp_path) == []


CAPTIVE_PORTAL_PAGE = b'<html><body>Sign in to the hotel Wi-Fi</body></html>'


@pytest.mark.parametrize('load', [load_checkpoint_file, checkpoint_file],
                         ids=['reader', 'tool_path'])
def test_refused_download_names_the_url_and_leaves_the_cache_empty_whichever_way_it_came(
        server, tmp_path, load):
    """A tool resolves a URL to its cached file before reading it: a refused download
    must not enter the cache that way either, or one portal page poisons the URL."""
    base_url, files, requests = server
    url = f'{base_url}/zoo/a0.pth'
    files['/zoo/a0.pth'] = CAPTIVE_PORTAL_PAGE
    with pytest.raises(CheckpointError, match=rf'^{url}: not a PyTorch checkpoint') as error:
        load(url)
    assert '\n' not in str(error.value)
    assert cache_entries(tmp_path) == []

    files['/zoo/a0.pth'] = checkpoint_bytes({'w': torch.ones(2)})  # the network is back
    torch.testing.assert_close(load_checkpoint_file(checkpoint_file(url))['w'], torch.ones(2))
    assert requests == ['/zoo/a0.pth', '/zoo/a0.pth']


def test_cached_file_the_reader_refuses_is_removed_when_read_by_its_path(server, tmp_path):
    """A file cached by an older version that read downloads only later."""
    base_url, files, _ = server
    url = f'{base_url}/zoo/a0.pth'
    files['/zoo/a0.pth'] = checkpoint_bytes({'w': torch.ones(2)})
    cached = checkpoint_file(url)
    with open(cached, 'wb') as stream:
        stream.write(CAPTIVE_PORTAL_PAGE)
    with pytest.raises(CheckpointError, match='not a PyTorch checkpoint'):
        load_checkpoint_file(cached)
    assert cache_entries(tmp_path) == []


def redirects_to(location):
    def handler_function(handler, release):
        handler.send_response(302)
        handler.send_header('Location', location)
        handler.send_header('Content-Length', '0')
        handler.end_headers()
    return handler_function


def test_redirect_off_http_is_refused_in_one_line(server, tmp_path):
    base_url, files, requests = server
    files['/a0.pth'] = redirects_to('ftp://127.0.0.1/a0.pth')
    with pytest.raises(CheckpointError, match=rf'^{base_url}/a0.pth: the server redirects to '
                       r"'ftp://127.0.0.1/a0.pth', which is not http\(s\)") as error:
        load_checkpoint_file(f'{base_url}/a0.pth')
    assert '\n' not in str(error.value)
    assert cache_entries(tmp_path) == []


def test_redirect_within_http_is_followed(server):
    base_url, files, requests = server
    files['/a0.pth'] = redirects_to('/mirror/a0.pth')
    files['/mirror/a0.pth'] = checkpoint_bytes({'w': torch.ones(1)})
    torch.testing.assert_close(load_checkpoint_file(f'{base_url}/a0.pth')['w'], torch.ones(1))
    assert requests == ['/a0.pth', '/mirror/a0.pth']


def test_cache_that_is_a_file_gives_one_line(server, tmp_path, monkeypatch):
    base_url, files, _ = server
    files['/a0.pth'] = checkpoint_bytes({'w': torch.ones(1)})
    not_a_folder = tmp_path / 'cache_file'
    not_a_folder.write_bytes(b'user data')
    monkeypatch.setenv('MMREPVGG_CACHE', str(not_a_folder))
    with pytest.raises(CheckpointError, match=r'a0.pth: cannot be downloaded into .*cache_file/'
                       r'checkpoints \(.*\); point MMREPVGG_CACHE at a writable folder') as error:
        load_checkpoint_file(f'{base_url}/a0.pth')
    assert '\n' not in str(error.value)
    assert not_a_folder.read_bytes() == b'user data'


def hangs_after_headers(handler, release):
    handler.send_response(200)
    handler.send_header('Content-Length', '1000')
    handler.end_headers()
    handler.wfile.flush()
    release.wait()


def trickles(handler, release):
    """One byte every 50 ms: never silent for the read timeout, never done."""
    handler.send_response(200)
    handler.send_header('Content-Length', '4000')
    handler.end_headers()
    while not release.wait(0.05):
        handler.wfile.write(b'x')
        handler.wfile.flush()


def cut_short(handler, release):
    handler.send_response(200)
    handler.send_header('Content-Length', '1000')
    handler.end_headers()
    handler.wfile.write(b'PK\x03\x04' + b'\0' * 96)
    handler.close_connection = True


def too_large_without_length(handler, release):
    handler.send_response(200)
    handler.end_headers()
    handler.wfile.write(b'\0' * 5000)
    handler.close_connection = True


def declares_no_number(handler, release):
    handler.send_response(200)
    handler.send_header('Content-Length', 'abc')
    handler.end_headers()
    handler.wfile.write(b'\0' * 10)
    handler.close_connection = True


def declares_too_much(handler, release):
    handler.send_response(200)
    handler.send_header('Content-Length', str(10**12))
    handler.end_headers()


@pytest.mark.parametrize('behaviour, expected', [
    (hangs_after_headers, r'the server sent nothing for 0.2 s; run again later'),
    (trickles, r'download took longer than 0.2 s'),
    (cut_short, r'download was interrupted \(IncompleteRead\)'),
    (too_large_without_length, r'sends more than the 4096 bytes a checkpoint may have'),
    (declares_too_much, r'is 1000000000000 bytes, more than the 4096 bytes'),
    (declares_no_number, r"declares a Content-Length of 'abc', not a number of bytes"),
])
def test_hostile_servers_give_one_line_and_leave_nothing(server, tmp_path, monkeypatch,
                                                         behaviour, expected):
    monkeypatch.setattr(remote, 'READ_TIMEOUT_S', 0.2)
    monkeypatch.setattr(remote, 'TOTAL_TIMEOUT_S', 0.2)
    monkeypatch.setattr(remote, 'MAX_DOWNLOAD_BYTES', 4096)
    monkeypatch.setattr(remote, '_CHUNK_BYTES', 1000)
    base_url, files, _ = server
    files['/a0.pth'] = behaviour
    with pytest.raises(CheckpointError, match=expected) as error:
        load_checkpoint_file(f'{base_url}/a0.pth')
    assert '\n' not in str(error.value)
    assert cache_entries(tmp_path) == []


def test_unreachable_server_gives_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv('MMREPVGG_CACHE', str(tmp_path / 'cache'))
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
    from mmrepvgg.checkpoint.fitting import checkpoint_file
    from mmrepvgg.model_zoo import checkpoint_source
    url = checkpoint_source(A0_ZOO_NAME)
    assert url.startswith('https://') and url.endswith('-883ab98c.pth')
    content_hash = hashlib.sha256(a0_train_checkpoint_bytes).hexdigest()
    cached = os.path.join(remote._cache_dir(), f'{remote._url_hash(url)}-{content_hash}.pth')
    os.makedirs(os.path.dirname(cached))  # under the fixture's MMREPVGG_CACHE
    with open(cached, 'wb') as stream:
        stream.write(a0_train_checkpoint_bytes)

    assert checkpoint_file(A0_ZOO_NAME) == cached
    assert checkpoint_file(str(tmp_path / 'local.pth')) == str(tmp_path / 'local.pth')
