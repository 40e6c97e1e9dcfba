"""Families of hostile files, each refused in one line by the reader with nothing run, and
each loaded by plain ``torch.load`` the same way whether or not mmrepvgg was imported.

The pickles are written opcode by opcode (``pickletools`` names) where no Python object
pickles that way; the archives are written with ``zipfile`` as torch lays them out.
"""
import io
import json
import pickle
import struct
import subprocess
import sys
import zipfile
import zlib

import numpy as np
import pytest
import torch

from mmrepvgg.checkpoint import CheckpointError, load_checkpoint_file
from mmrepvgg.checkpoint._pickle_machine import MAX_NESTING

HOSTILE_FILES = []  # every file made here, for the plain-torch comparison at the end


def torch_zip(path, data_pkl, storages=(), compression=zipfile.ZIP_STORED, extra=()):
    """A torch zip archive with ``data.pkl`` and ``data/<key>`` records."""
    with zipfile.ZipFile(path, 'w', compression) as archive:
        archive.writestr('archive/data.pkl', data_pkl)
        archive.writestr('archive/byteorder', b'little')
        for key, raw in storages:
            archive.writestr(f'archive/data/{key}', raw)
        for name, raw in extra:
            archive.writestr(name, raw)
        archive.writestr('archive/version', b'3\n')
    return path


def text(value):
    raw = value.encode()
    return b'X' + struct.pack('<I', len(raw)) + raw


def global_(module, name):
    return f'c{module}\n{name}\n'.encode()


def tensor_pickle(key='0', numel=4, storage_class='FloatStorage', shape=(4, ), stride=(1, ),
                  offset=0):
    """A protocol 2 pickle of ``{'weight': tensor}`` as torch.save writes it."""
    def ints(values):
        return b'(' + b''.join(b'J' + struct.pack('<i', v) for v in values) + b't'
    pid = (b'(' + text('storage') + global_('torch', storage_class) + text(key) + text('cpu')
           + b'J' + struct.pack('<i', numel) + b'tQ')
    return (b'\x80\x02}' + text('weight') + global_('torch._utils', '_rebuild_tensor_v2')
            + b'(' + pid + b'J' + struct.pack('<i', offset) + ints(shape) + ints(stride)
            + b'\x89' + global_('collections', 'OrderedDict') + b')Rt' + b'Rs.')


def saved(path, content, **options):
    torch.save(content, path, **options)
    return path


def refused(path, expected):
    HOSTILE_FILES.append(str(path))
    with pytest.raises(CheckpointError, match=expected) as error:
        load_checkpoint_file(str(path))
    assert '\n' not in str(error.value)
    return str(error.value)


class Reduce:
    def __init__(self, function, args, state=None):
        self.function, self.args, self.state = function, args, state

    def __reduce__(self):
        return (self.function, self.args) if self.state is None else \
            (self.function, self.args, self.state)


# --- numpy: dtypes and arrays a file chooses (the measured segfault: an object array) ---
# The functions numpy's own pickles call (in numpy.core.multiarray before numpy 2, in
# numpy._core.multiarray since).
NUMPY_RECONSTRUCT = np.zeros(1).__reduce__()[0]
NUMPY_SCALAR = np.float64(0).__reduce__()[0]


@pytest.mark.parametrize('value', [
    np.array([None, 1], dtype=object),
    np.zeros(2, dtype=[('a', 'f4'), ('b', 'i4')]),
    np.zeros(2, dtype='V8'),
    np.array(['text']),
    np.dtype('O'),
    np.zeros(2, dtype='>f4'),
    Reduce(np.dtype, ('f8', False, True), (3, '<', None, None, None, -1, -1, 63)),  # flags
    Reduce(np.dtype, ('f8', False, True), (3, '<', None, ('a', ), {'a': (np.dtype('O'), 0)},
                                           8, 1, 63)),
    Reduce(NUMPY_RECONSTRUCT, (np.ndarray, (1000, ), b'b')),
    Reduce(NUMPY_SCALAR, (np.dtype('f8'), b'\0' * 4)),
], ids=['object', 'structured', 'void', 'unicode', 'object dtype', 'big-endian',
        'dtype flags', 'dtype fields', 'reconstruct shape', 'scalar size'])
@pytest.mark.parametrize('zip_format', [True, False], ids=['zip', 'legacy'])
def test_numpy_values_other_than_plain_numbers_are_refused(tmp_path, value, zip_format):
    path = saved(tmp_path / 'numpy.pth', {'message_hub': {'x': value}},
                 _use_new_zipfile_serialization=zip_format)
    refused(path, r'refused, (it holds a numpy|it calls numpy)')


# --- torch zip: what one zip reader follows and another does not ---
def good_archive_bytes():
    buffer = io.BytesIO()
    torch.save({'weight': torch.arange(64.)}, buffer)
    return bytearray(buffer.getvalue())


@pytest.mark.parametrize('damage', ['central directory', 'central sizes', 'local header name',
                                    'truncated'])
def test_archives_zipfile_cannot_follow_are_refused(tmp_path, damage):
    content = good_archive_bytes()
    if damage == 'central directory':
        at = content.rindex(b'PK\x01\x02')
        content[at:at + 4] = b'PK\x09\x09'
    elif damage == 'central sizes':  # the record claims 4 bytes more than it stores
        at = content.index(b'PK\x01\x02' + content[content.index(b'PK\x01\x02') + 4:][:0])
        while content[at + 46:at + 60] != b'archive/data/0':
            at = content.index(b'PK\x01\x02', at + 4)
        size = struct.unpack('<I', content[at + 20:at + 24])[0]
        content[at + 20:at + 28] = struct.pack('<II', size + 4, size + 4)
    elif damage == 'local header name':
        at = content.index(b'archive/data.pkl')
        content[at:at + 7] = b'ARCHIVE'
    else:
        content = content[:len(content) // 2]
    path = tmp_path / 'damaged.pth'
    path.write_bytes(bytes(content))
    refused(path, r'truncated or corrupt checkpoint|refused, the archive|CRC-32 does not '
            'match')


@pytest.mark.parametrize('case, expected', [
    ('shorter storage', r'storage 0 declares 4 elements but the file holds 12 bytes'),
    ('longer storage', r'storage 0 declares 4 elements but the file holds 20 bytes'),
    ('missing storage', r'storage 0 declares 4 elements but the file holds 0 bytes'),
    ('deflated bomb', r'is compressed, which torch.save never does'),
    ('repeated record', r'repeats a record name'),
    ('record outside', r'records outside its folder'),
    ('torchscript', r'is a TorchScript archive'),
    ('view past storage', r'claims shape \(4,\) with strides \(1,\) over 4 stored elements'),
    ('other storage class', r'calls torch.QInt8Storage'),
    ('bool byte 2', r'a bool tensor holds bytes other than 0 and 1'),
])
def test_archive_records_must_hold_what_the_pickle_declares(tmp_path, case, expected):
    raw = struct.pack('<4f', 1, 2, 3, 4)
    data_pkl = tensor_pickle()
    storages, extra, compression = [('0', raw)], [], zipfile.ZIP_STORED
    if case == 'shorter storage':
        storages = [('0', raw[:12])]
    elif case == 'longer storage':
        storages = [('0', raw + b'\0' * 4)]
    elif case == 'missing storage':
        storages = []
    elif case == 'deflated bomb':  # 10 MB of zeros in about 10 kB
        data_pkl = tensor_pickle(numel=25 * 10**5, shape=(25 * 10**5, ))
        storages, compression = [('0', bytes(10**7))], zipfile.ZIP_DEFLATED
    elif case == 'repeated record':
        extra = [('archive/data/0', raw)]
    elif case == 'record outside':
        extra = [('other/data.bin', raw)]
    elif case == 'torchscript':
        extra = [('archive/constants.pkl', b'')]
    elif case == 'view past storage':
        data_pkl = tensor_pickle(offset=1)
    elif case == 'bool byte 2':
        data_pkl = tensor_pickle(storage_class='BoolStorage')
        storages = [('0', b'\x00\x01\x02\x00')]
    else:
        data_pkl = tensor_pickle(storage_class='QInt8Storage', numel=16)
    with pytest.warns(UserWarning) if case == 'repeated record' else _no_warning():
        path = torch_zip(tmp_path / 'model.pth', data_pkl, storages, compression, extra)
    refused(path, expected)


class _no_warning:
    def __enter__(self):
        return self

    def __exit__(self, *args):
        return False


def test_handmade_archive_reads_like_torch_save(tmp_path):
    """The builders above make files the reader accepts when nothing is wrong."""
    path = torch_zip(tmp_path / 'model.pth', tensor_pickle(),
                     [('0', struct.pack('<4f', 1, 2, 3, 4))])
    torch.testing.assert_close(load_checkpoint_file(str(path))['weight'],
                               torch.tensor([1., 2., 3., 4.]))
    torch.testing.assert_close(torch.load(path, weights_only=True)['weight'],
                               torch.tensor([1., 2., 3., 4.]))


def local_header(name, payload):
    """A stored record's local header (zip APPNOTE 4.3.7), CRC-32 and sizes of ``payload``."""
    return struct.pack('<4s5H3I2H', b'PK\x03\x04', 20, 0, 0, 0, 0, zlib.crc32(payload),
                       len(payload), len(payload), len(name), 0) + name


def handmade_zip(body, records, claimed_sizes=None):
    """``body`` followed by a central directory of ``records`` (name, payload, offset of
    its local header in ``body``); ``claimed_sizes`` may give a record another size."""
    central = b''
    for name, payload, offset in records:
        size = (claimed_sizes or {}).get(name, len(payload))
        central += struct.pack('<4s6H3I5H2I', b'PK\x01\x02', 20, 20, 0, 0, 0, 0,
                               zlib.crc32(payload), size, size, len(name), 0, 0, 0, 0, 0,
                               offset) + name
    return body + central + struct.pack('<4s4H2IH', b'PK\x05\x06', 0, 0, len(records),
                                        len(records), len(central), len(body), 0)


def nested_records_zip(storage_count, last_storage_bytes=4096):
    """Storage record k's stored bytes are the local header and bytes of record k + 1: each
    record, CRC correct, holds every later one, so the file's bytes count many times."""
    names = [f'archive/data/{key}'.encode() for key in range(storage_count)]
    last_storage = bytes(last_storage_bytes)
    chain = local_header(names[-1], last_storage) + last_storage
    for name in reversed(names[:-1]):
        chain = local_header(name, chain) + chain
    payloads, at = [], 0
    for name in names:  # each header is 44 bytes: the payloads stay whole floats
        header_size = 30 + len(name)
        payloads.append((name, chain[at + header_size:], at))
        at += header_size
    pids = b''.join(
        text(str(key)) + global_('torch._utils', '_rebuild_tensor_v2') + b'(' + b'(' + text(
            'storage') + global_('torch', 'FloatStorage') + text(str(key)) + text('cpu')
        + b'J' + struct.pack('<i', len(payload) // 4) + b'tQ' + b'J\0\0\0\0' + b'(J'
        + struct.pack('<i', len(payload) // 4) + b't(K\x01t\x89' + global_(
            'collections', 'OrderedDict') + b')Rt' + b'R' for key, (_, payload, _) in
        enumerate(payloads))
    data_pkl = b'\x80\x02}(' + pids + b'u.'
    body = b''
    records = []
    for name, payload in ((b'archive/data.pkl', data_pkl), (b'archive/byteorder', b'little')):
        records.append((name, payload, len(body)))
        body += local_header(name, payload) + payload
    records += [(name, payload, len(body) + at) for name, payload, at in payloads]
    return handmade_zip(body + chain, records)


def test_zip_records_that_overlap_are_refused_though_their_crcs_match(tmp_path):
    path = tmp_path / 'overlapping.pth'
    path.write_bytes(nested_records_zip(storage_count=8))
    with zipfile.ZipFile(path) as archive:  # a valid zip to zipfile: every CRC matches
        assert archive.testzip() is None
        claimed_bytes = sum(info.file_size for info in archive.infolist())
    assert claimed_bytes > 3 * path.stat().st_size
    refused(path, r"refused, the archive's records archive/data/0 and archive/data/1 "
            'overlap')


def test_zip_record_claiming_bytes_past_the_end_of_the_file_is_refused(tmp_path):
    raw = struct.pack('<4f', 1, 2, 3, 4)
    body, records = b'', []
    for name, payload in ((b'archive/data.pkl', tensor_pickle()), (b'archive/data/0', raw),
                          (b'archive/version', b'3\n')):
        records.append((name, payload, len(body)))
        body += local_header(name, payload) + payload
    path = tmp_path / 'past_the_end.pth'
    path.write_bytes(handmade_zip(body, records, {b'archive/version': 2**31}))
    refused(path, r'truncated or corrupt checkpoint \(record archive/version ends past the '
            r'end of the file\)')


def test_handmade_zip_of_separate_records_reads(tmp_path):
    """The builders above make files the reader accepts when records do not overlap."""
    raw = struct.pack('<4f', 1, 2, 3, 4)
    body, records = b'', []
    for name, payload in ((b'archive/data.pkl', tensor_pickle()), (b'archive/data/0', raw)):
        records.append((name, payload, len(body)))
        body += local_header(name, payload) + payload
    path = tmp_path / 'separate.pth'
    path.write_bytes(handmade_zip(body, records))
    torch.testing.assert_close(load_checkpoint_file(str(path))['weight'],
                               torch.tensor([1., 2., 3., 4.]))


# --- torch legacy: storages declared, listed and stored must agree ---
def legacy_file(tmp_path, edit):
    buffer = io.BytesIO()
    torch.save({'a': torch.arange(4.), 'b': torch.arange(3.)}, buffer,
               _use_new_zipfile_serialization=False)
    path = tmp_path / 'legacy.pth'
    path.write_bytes(edit(buffer.getvalue()))
    return path


def storage_list_position(content):
    """Where the pickled list of storage keys starts: after four pickles."""
    position = 0
    for _ in range(4):
        position += _pickle_length(content[position:])
    return position


def _pickle_length(content):
    import pickletools
    for opcode, _, position in pickletools.genops(content):
        if opcode.name == 'STOP':
            return position + 1
    raise AssertionError('no STOP')


def _replace_storage_list(content, keys):
    start = storage_list_position(content)
    end = start + _pickle_length(content[start:])
    return content[:start] + pickle.dumps(keys, protocol=2) + content[end:]


def _declared_keys(content):
    start = storage_list_position(content)
    return pickle.loads(content[start:start + _pickle_length(content[start:])])


@pytest.mark.parametrize('case, expected', [
    ('storage left out', r'does not name each storage the pickle uses exactly once'),
    ('storage listed twice', r'does not name each storage the pickle uses exactly once'),
    ('other size stored', r'is stored with another size than it declares'),
    ('trailing bytes', r'holds bytes after its last storage'),
    ('truncated storage', r'a storage ends early|stored with another size'),
    ('huge declared storage', r'declares more bytes than the file holds'),
    ('keys of mixed types', r'does not name each storage the pickle uses exactly once'),
])
def test_legacy_storages_must_be_listed_and_stored_as_declared(tmp_path, case, expected):
    def edit(content):
        keys = _declared_keys(content)
        data_start = storage_list_position(content)
        data_start += _pickle_length(content[data_start:])
        if case == 'storage left out':
            return _replace_storage_list(content, keys[:1])
        if case == 'storage listed twice':
            return _replace_storage_list(content, keys + keys[:1])
        if case == 'keys of mixed types':  # unorderable: once a TypeError traceback
            return _replace_storage_list(content, [keys[0], 1])
        if case == 'other size stored':
            return content[:data_start] + struct.pack('<q', 99) + content[data_start + 8:]
        if case == 'trailing bytes':
            return content + b'\0' * 8
        if case == 'truncated storage':
            return content[:-4]
        return content.replace(b'K\x04N', b'J\x00\x00\x00\x7fN', 1)  # numel 4 -> 2**31
    refused(legacy_file(tmp_path, edit), expected)


# --- pickles: opcodes, globals and shapes no checkpoint needs ---
PICKLE_PAYLOADS = [
    (b'\x80\x02' + global_('os', 'system') + text('touch PWNED') + b'\x85R.',
     r'refused, it calls os.system'),
    (b'\x80\x02(' + global_('collections', 'OrderedDict') + b'o.', r"uses opcode b'o'"),
    (b'\x80\x02(' + text('x') + b'ios\nsystem\n.', r"uses opcode b'i'"),
    (b'\x80\x02\x82\x01.', r"uses opcode b'\\x82'"),
    (b'\x80\x02P1\n.', r"uses opcode b'P'"),
    (b'\x80\x05\x96' + struct.pack('<Q', 4) + b'abcd.', r"uses opcode b'\\x96'"),
    (b'\x80\x02' + global_('builtins', 'getattr')
     + global_('mmengine.logging.history_buffer', 'HistoryBuffer') + text('__init__')
     + b'\x86R.', r"builtins.getattr\(\.\.\., '__init__'\)"),
    (b'\x80\x02' + global_('collections', 'OrderedDict') + text('a') + b'\x85R.',
     r'OrderedDict with arguments'),
    (b'\x80\x02' + global_('torch', 'FloatStorage') + b')R.', r'which is only a name here'),
    (b'\x80\x02' + global_('argparse', 'Namespace') + text('x') + b'\x85\x81.',
     r'creates an object of a class no checkpoint needs'),
    (b'\x80\x02]' + global_('torch.nn', 'Module') + b'a.', r'calls torch.nn.Module'),
    (b'\x80\x02}Nb.', r'sets the state of a dict'),
    (b'\x80\x02\x8b' + struct.pack('<I', 10**6) + b'\0' * 10**6 + b'.',
     r'an integer of 1000000 bytes'),
    (b'\x80\x02X' + struct.pack('<I', 2**31) + b'abc.', r'truncated or corrupt'),
    (b'\x80\x02h\x05.', r'unknown memo entry'),
    (b'\x80\x02.', r'malformed \(empty stack\)'),
]


@pytest.mark.parametrize('payload, expected', PICKLE_PAYLOADS)
def test_pickle_opcodes_and_globals_outside_the_table_are_refused(
        tmp_path, payload, expected):
    refused(torch_zip(tmp_path / 'evil.pth', payload), expected)


def test_deep_nesting_and_cycles_are_refused_without_recursion(tmp_path):
    depth = 10**5
    deep = b'\x80\x02' + b']' * depth + b'a' * (depth - 1) + b'.'
    refused(torch_zip(tmp_path / 'deep.pth', deep), rf'nest more than {MAX_NESTING} deep')
    cycle = b'\x80\x02]q\x00h\x00a.'
    refused(torch_zip(tmp_path / 'cycle.pth', cycle), r'a container contains itself')


def test_tuple_dict_keys_that_would_hash_exponentially_are_refused(tmp_path):
    """(t, t) of (t', t') of ...: hashing it visits 2**80 tuples."""
    levels = b''.join(b'h\x00h\x00\x86q\x000' for _ in range(80))
    payload = b'\x80\x02})q\x000' + levels + b'h\x00Ns.'
    refused(torch_zip(tmp_path / 'hash.pth', payload), r'a dict key is not a string or number')


def test_billion_laughs_memo_chain_reads_with_shared_references(tmp_path):
    """Each level holds the previous one twice: a copy would be 2**60 lists."""
    levels = 60
    payload = b'\x80\x02]q\x000' + b''.join(
        b']h\x00ah\x00aq\x000' for _ in range(levels)) + b'h\x00.'
    path = torch_zip(tmp_path / 'laughs.pth', payload)
    value = load_checkpoint_file(str(path))
    for _ in range(levels):
        assert value[0] is value[1]
        value = value[0]
    assert value == []


# --- safetensors: a header that lies about its data ---
def safetensors_file(path, header, data):
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack('<Q', len(raw)) + raw + data)
    return path


@pytest.mark.parametrize('header, data, expected', [
    ({'w': {'dtype': 'F32', 'shape': [4], 'data_offsets': [0, 16]}}, b'\0' * 8,
     'do not tile the data'),
    ({'w': {'dtype': 'F32', 'shape': [2], 'data_offsets': [0, 8]},
      'v': {'dtype': 'F32', 'shape': [2], 'data_offsets': [0, 8]}}, b'\0' * 8,
     'do not tile the data'),
    ({'w': {'dtype': 'F32', 'shape': [10**12], 'data_offsets': [0, 4 * 10**12]}}, b'',
     'do not tile the data'),
    ({'w': {'dtype': 'F8_E4M3', 'shape': [1], 'data_offsets': [0, 1]}}, b'\0',
     'has dtype F8_E4M3'),
    ({'w': {'dtype': 'F32', 'shape': [1], 'data_offsets': [0, 4]}}, b'\0' * 8,
     'longer or shorter than its tensors'),
    ({'w': {'dtype': 'F32'}}, b'', 'lacks dtype, shape or data_offsets'),
])
def test_safetensors_headers_must_describe_the_data_exactly(tmp_path, header, data, expected):
    refused(safetensors_file(tmp_path / 'model.safetensors', header, data), expected)


# --- plain torch behaves as without the import, on every file above ---
PLAIN_LOADS = '''
import json, sys
if sys.argv[1] == 'import':
    import mmrepvgg  # noqa: F401
import torch
outcomes = []
for path in json.load(open(sys.argv[2])):
    try:
        torch.load(path, weights_only=True)
        outcomes.append('loaded')
    except Exception as error:
        outcomes.append(type(error).__name__)
print(json.dumps(outcomes))
'''


def test_plain_torch_load_of_every_hostile_file_is_unchanged_by_the_import(tmp_path):
    files = [path for path in HOSTILE_FILES if not path.endswith('.safetensors')]
    for index, (payload, _) in enumerate(PICKLE_PAYLOADS):  # also when run alone
        files.append(str(torch_zip(tmp_path / f'payload_{index}.pth', payload)))
    listing = tmp_path / 'files.json'
    listing.write_text(json.dumps(files))
    outcomes = {}
    for mode in ('import', 'plain'):
        result = subprocess.run([sys.executable, '-c', PLAIN_LOADS, mode, str(listing)],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-2000:]
        outcomes[mode] = json.loads(result.stdout)
    assert outcomes['import'] == outcomes['plain']


BOMB_LOADS = '''
import json, sys, time
from mmrepvgg.checkpoint import CheckpointError, load_checkpoint_file


def peak_rss_mib():
    # VmHWM: this process's own peak since it started (ru_maxrss would carry the peak of
    # the pytest process it was forked from).
    with open('/proc/self/status') as status:
        line = next(line for line in status if line.startswith('VmHWM:'))
    return int(line.split()[1]) // 1024


figures = {'import_rss_mib': peak_rss_mib()}
for path in sys.argv[1:]:
    start = time.perf_counter()
    try:
        load_checkpoint_file(path)
        outcome = 'read'
    except CheckpointError as error:
        outcome = str(error).split(': ', 1)[1][:60]
    figures[path.rsplit('/', 1)[-1]] = [round(time.perf_counter() - start, 3), outcome]
figures['peak_rss_mib'] = peak_rss_mib()
print(json.dumps(figures))
'''


def test_bomb_files_are_read_in_bounded_time_and_memory(tmp_path):
    """One subprocess reads every bomb; its peak RSS (imports included) stays under 2 GiB
    and each file under 60 s. The figures are printed (pytest -s) for docs/."""
    bombs = []
    deflated = tmp_path / 'deflated.pth'  # 512 MiB of zeros in about 0.5 MiB
    with zipfile.ZipFile(deflated, 'w', zipfile.ZIP_DEFLATED) as archive:
        archive.writestr('archive/data.pkl', tensor_pickle(numel=2**27, shape=(2**27, )),
                         zipfile.ZIP_STORED)
        with archive.open('archive/data/0', 'w') as record:
            for _ in range(512):
                record.write(bytes(2**20))
    bombs.append(deflated)
    bombs.append(saved(tmp_path / 'expand.pth', {'w': torch.zeros(1).expand(10**6, 10**6)}))
    bombs.append(legacy_file(tmp_path, lambda content: content.replace(
        b'K\x04N', b'J\x00\x00\x00\x7fN', 1)))
    bombs.append(torch_zip(tmp_path / 'laughs.pth', b'\x80\x02]q\x000' + b''.join(
        b']h\x00ah\x00aq\x000' for _ in range(90)) + b'h\x00.'))
    bombs.append(torch_zip(tmp_path / 'deep.pth', b'\x80\x02' + b']' * 10**6
                           + b'a' * (10**6 - 1) + b'.'))
    bombs.append(torch_zip(tmp_path / 'long.pth', b'\x80\x02\x8b' + struct.pack('<I', 10**7)
                           + bytes(10**7) + b'.'))
    bombs.append(safetensors_file(tmp_path / 'huge.safetensors', {'w': {
        'dtype': 'F32', 'shape': [10**6, 10**6], 'data_offsets': [0, 4 * 10**12]}}, b''))
    result = subprocess.run([sys.executable, '-c', BOMB_LOADS, *map(str, bombs)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(result.stdout)
    print(figures)
    assert figures.pop('peak_rss_mib') < 2048
    figures.pop('import_rss_mib')
    assert all(seconds < 60 for seconds, _ in figures.values())
    assert figures['laughs.pth'][1] == 'read'
    assert all(outcome != 'read' for name, (_, outcome) in figures.items()
               if name != 'laughs.pth')
