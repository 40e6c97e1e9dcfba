"""The INT8 analysis tools end to end, in process: int8_accuracy.py measures every recipe
its docstring promises, each row's top-1 being what the file it names computes on the
test images when run by its runtime directly, and writes JSON and plots; int8_speed.py
prints every row with ratios that follow from its images/s; int8_kernel_emulation.py
prints its rows for 8- and 7-bit weights. Bad input gets one error line and no file is
replaced."""
import contextlib
import datetime
import importlib
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from mmengine.config import Config
from PIL import Image

from mmrepvgg.apis.convert import build_train_model

from conftest import REPO_ROOT, load_tool, needs_torch_for_nncf

TOOLS = os.path.join(REPO_ROOT, 'benchmarks')
DIGITS_CONFIG = os.path.join(REPO_ROOT, 'configs', 'digits', 'repvgg-A0_digits.py')
# The smallest RepVGG that is still one: a block per stage at a quarter of A0's widths
# (stage widths 16, 32, 64, 128), five convs once fused with the stem.
TINY_CONFIG = """_base_ = {base!r}
model = dict(
    backbone=dict(arch=dict(_delete_=True, num_blocks=(1, 1, 1, 1),
                            width_factor=(0.25, 0.25, 0.25, 0.25))),
    head=dict(in_channels=128))
# No loader workers: the tool tests each row in a new Runner, which waited ~5 s for the
# last one's persistent worker to stop.
train_dataloader = dict(batch_size=16, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root={data_root!r}))
val_dataloader = dict(batch_size=16, num_workers=0, persistent_workers=False,
                      dataset=dict(data_root={data_root!r}))
test_dataloader = val_dataloader
"""
TRAIN_IMAGES_PER_DIGIT, TEST_IMAGES_PER_DIGIT = 10, 5
CALIBRATION_IMAGES = 16
# ONNX Runtime's session entry for its u8u8 x64 INT8 kernels (its default is u8s8).
ORT_U8U8_ENTRY = 'session.x64quantprecision'


def _cpuinfo() -> tuple:
    """This machine's first ``model name`` and ``flags`` in /proc/cpuinfo, read here."""
    if not os.path.exists('/proc/cpuinfo'):
        pytest.skip('no /proc/cpuinfo to check the CPU the tools name against')
    with open('/proc/cpuinfo') as stream:
        lines = [line.partition(':') for line in stream]
    values = {}
    for key, _, value in lines:
        values.setdefault(key.strip(), value.strip())
    return values['model name'], set(values['flags'].split())


def _default_int8_kernels() -> str:
    """What host_cpu's docstring says ONNX Runtime should run 8-bit weights with here:
    u8s8 with VNNI (int32 accumulation) or off x86, else the exact u8u8 path."""
    has_vnni = bool({'avx512_vnni', 'avx_vnni'} & _cpuinfo()[1])
    x86 = platform.machine().lower() in ('x86_64', 'amd64', 'i386', 'i686')
    return 'u8s8' if has_vnni or not x86 else 'u8u8'


@pytest.fixture(scope='module')
def tiny_digits(digits_workspace, tmp_path_factory):
    """A config of the tiny RepVGG on a fresh data root of the first 10 train and 5 val
    digits of each class, and that root."""
    folder = tmp_path_factory.mktemp('int8_tools')
    data_root = folder / 'digits'
    for split, per_digit in (('train', TRAIN_IMAGES_PER_DIGIT), ('val', TEST_IMAGES_PER_DIGIT)):
        for digit_folder in sorted((digits_workspace / 'data' / 'digits' / split).iterdir()):
            target = data_root / split / digit_folder.name
            target.mkdir(parents=True)
            for image in sorted(digit_folder.iterdir())[:per_digit]:
                shutil.copy(image, target / image.name)
    config = folder / 'repvgg-tiny_digits.py'
    config.write_text(TINY_CONFIG.format(base=DIGITS_CONFIG, data_root=str(data_root)))
    return str(config), data_root


def _images(config: str, folder) -> tuple:
    """Every PNG of ``folder/<digit>/`` as the digits test pipeline delivers it, made here
    with PIL: grey to 3 equal channels, bicubic to 32x32, ``(x - mean) / std`` of the
    config; ``(N, 3, 32, 32)`` float32 images and their digits."""
    preprocessor = Config.fromfile(config).data_preprocessor
    mean, std = np.array(preprocessor.mean), np.array(preprocessor.std)
    images, labels = [], []
    for digit_folder in sorted(folder.iterdir()):
        for path in sorted(digit_folder.iterdir()):
            pixels = np.asarray(Image.open(path).convert('RGB').resize((32, 32),
                                                                       Image.BICUBIC))
            # float32 throughout, as the data preprocessor computes: the same bits.
            images.append(((pixels.astype(np.float32) - mean.astype(np.float32))
                           / std.astype(np.float32)).transpose(2, 0, 1))
            labels.append(int(digit_folder.name))
    return np.stack(images).astype(np.float32), np.array(labels)


@pytest.fixture(scope='module')
def tiny_checkpoint(tiny_digits):
    """The tiny model after 3 full-batch Adam steps on the 100 training images, saved as
    mmengine saves it; its train-form model (eval mode), the test images and labels.
    Trained, but not enough to be sure of every digit: on some images INT8 changes its
    answer, so a row evaluated on another row's file would show."""
    config, data_root = tiny_digits
    torch.manual_seed(0)
    model = build_train_model(config).train()
    images, labels = (torch.from_numpy(array) for array in _images(config, data_root / 'train'))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(model(images, mode='tensor'), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    path = data_root.parent / 'tiny.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {'epoch': 1}}, path)
    return str(path), model.eval(), _images(config, data_root / 'val')


def _torch_logits(model, images: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(images), mode='tensor').numpy()


def _top1(logits: np.ndarray, labels: np.ndarray) -> float:
    return 100 * float(np.mean(logits.argmax(1) == labels))


def _own_session_run(argv: list) -> subprocess.CompletedProcess:
    """Run a tool (``argv`` after the interpreter) as a user runs it: in a fresh process,
    in a session and process group of its own."""
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True,
                          start_new_session=True)


@contextlib.contextmanager
def _importable_int8_accuracy():
    """int8_accuracy imported by its name from benchmarks/ (not by load_tool): it
    measures each checkpoint in a spawned process, which finds its worker function by
    module name; sys.path and sys.modules as before afterwards."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(TOOLS)
        try:
            yield importlib.import_module('int8_accuracy')
        finally:
            sys.modules.pop('int8_accuracy', None)


def _batched(run, images: np.ndarray) -> np.ndarray:
    """``run`` on batches of 16, the test loader's batch size, so each file sees the very
    batches the tool's test loop gave it."""
    return np.concatenate([run(images[start:start + 16]) for start in range(0, len(images), 16)])


def _runtime_logits(row: dict, work_dir, images: np.ndarray) -> np.ndarray:
    """Logits of the file ``row`` names, run here through its runtime's own API on one
    thread (f32 where not quantized), on the kernels the row names or else on the ones
    this CPU should get."""
    path = str(work_dir / row['file'])
    if row['runtime'] == 'openvino':
        import openvino

        from mmrepvgg.deploy.openvino_runtime import _signal_stack_kept as signal_stack_kept
        with signal_stack_kept():  # this test process must survive the plugin's end
            compiled = openvino.Core().compile_model(
                path, 'CPU', {'INFERENCE_PRECISION_HINT': 'f32', 'INFERENCE_NUM_THREADS': 1})
        return _batched(lambda batch: compiled(batch)[compiled.output(0)], images)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    if row.get('int8_kernels', _default_int8_kernels()) == 'u8u8':
        options.add_session_config_entry(ORT_U8U8_ENTRY, '1')
    session = onnxruntime.InferenceSession(path, options, providers=['CPUExecutionProvider'])
    name = session.get_inputs()[0].name
    return _batched(lambda batch: session.run(None, {name: batch})[0], images)


def _promised_rows(max_drop: str) -> list:
    """(runtime, recipe, kernels) of each row the docstring of int8_accuracy.py lists, in
    its order; kernels None where the file runs on this CPU's choice."""
    from mmrepvgg.deploy.openvino_runtime import OPENVINO_CALIBRATION_METHODS
    here = _default_int8_kernels()
    other = 'u8u8' if here == 'u8s8' else 'u8s8'
    mixed = f'ptq minmax + mixed (max drop {max_drop})'
    return [('pytorch', 'fp32', None), ('onnxruntime', 'fp32', None),
            *((('onnxruntime', f'ptq {method}', kernels) for method in
               ('minmax', 'percentile', 'entropy') for kernels in (here, other))),
            ('onnxruntime', 'ptq minmax, 7-bit weights', 'u8s8'),
            ('onnxruntime', 'ptq minmax + adaround', here),
            ('onnxruntime', 'ptq minmax, 7-bit weights + adaround', 'u8s8'),
            ('onnxruntime', mixed, None), ('onnxruntime', 'QAT', None),
            ('openvino', 'fp32', None),
            *(('openvino', f'ptq {method}', None) for method in OPENVINO_CALIBRATION_METHODS),
            ('openvino', mixed, None)]


@pytest.mark.slow
@needs_torch_for_nncf  # a promised row is OpenVINO INT8
def test_int8_accuracy_measures_every_promised_recipe_and_writes_json_and_plots(
        tiny_digits, tiny_checkpoint, tmp_path, capsys):
    pytest.importorskip('openvino')  # the OpenVINO rows: the [openvino] extra
    config, _ = tiny_digits
    checkpoint, model, (images, labels) = tiny_checkpoint
    outputs = {name: tmp_path / name for name in ('int8.json', 'int8.png', 'sqnr.png')}
    work_dir = tmp_path / 'work'
    run = _own_session_run([
        os.path.join(TOOLS, 'int8_accuracy.py'),
        '--model', 'RepVGG-tiny', config, checkpoint, '--calib-images',
        str(CALIBRATION_IMAGES), '--check-images', '16', '--max-drop', '0.3',
        '--qat-epochs', '1', '--qat-lr', '1e-5', '--adaround-iterations', '20',
        '--work-dir', str(work_dir),
        '--json', str(outputs['int8.json']), '--plot', str(outputs['int8.png']),
        '--sensitivity-plot', str(outputs['sqnr.png'])])
    assert run.returncode == 0, run.stderr[-3000:]
    printed = run.stdout
    results = json.loads(outputs['int8.json'].read_text())
    rows = results['rows']

    # Every promised row, named as the docstring names it, and in the printed table.
    named = [(row['runtime'], 'QAT' if row['recipe'].startswith('qat') else row['recipe'],
              row.get('int8_kernels')) for row in rows]
    assert named == _promised_rows('0.3')
    qat_row = next(row for row in rows if row['recipe'].startswith('qat'))
    assert re.fullmatch(r'qat \(BN re-inserted\) 1 epochs? lr 1e-05 \+ ptq minmax',
                        qat_row['recipe'])
    assert len(qat_row['qat_losses']) >= 1
    assert all(math.isfinite(loss) for loss in qat_row['qat_losses'])
    for row in rows:
        assert row['model'] == 'RepVGG-tiny' and row['images_per_s'] > 0
        assert f"| RepVGG-tiny | {row['runtime']} | {row['recipe']} | " in printed

    # Each top-1 is what the file it names computes on the test images, run here (same
    # bits in, same batches, one thread: equal to the last digit); the PyTorch row is the
    # checkpoint's model run here.
    reference = _batched(lambda batch: _torch_logits(model, batch), images)
    assert rows[0]['top1'] == pytest.approx(_top1(reference, labels))
    one_image = 100 / len(labels)
    for row in rows[1:]:
        logits = _runtime_logits(row, work_dir, images)
        assert row['top1'] == pytest.approx(_top1(logits, labels)), row['recipe']
        assert row['test_images'] == len(labels)
        # Against PyTorch's fused deploy model (here: its train form): a near tie may
        # break the other way.
        agreement = np.mean(logits.argmax(1) == reference.argmax(1))
        assert abs(row['agreement_with_pytorch'] - agreement) <= 1 / len(labels)
        # The images only one of the two gets right, and the interval they give.
        right, reference_right = logits.argmax(1) == labels, reference.argmax(1) == labels
        lost = int(np.sum(reference_right & ~right))
        gained = int(np.sum(right & ~reference_right))
        assert abs(row['only_pytorch_correct'] - lost) <= 1, row['recipe']
        assert abs(row['only_this_correct'] - gained) <= 1, row['recipe']
        low, high = row['top1_change_95']
        change = 100 * (row['only_this_correct'] - row['only_pytorch_correct']) / len(labels)
        assert low <= change <= high and (low < high or lost == gained == 0)
        if row['recipe'] == 'fp32':  # FP32 files compute the checkpoint's model
            assert abs(row['top1'] - rows[0]['top1']) <= one_image, row['runtime']

    # Sensitivity: every conv of the FP32 ONNX file once, worst (lowest SQNR) first; the
    # mixed rows keep some of those convs FP32.
    fp32_onnx = work_dir / next(row['file'] for row in rows
                                if row['runtime'] == 'onnxruntime' and row['recipe'] == 'fp32')
    convs = [node.name for node in onnx.load(str(fp32_onnx)).graph.node
             if node.op_type == 'Conv']
    assert len(convs) == 5  # the stem and four blocks
    sensitivity = results['sensitivity']['RepVGG-tiny']
    assert sorted(row['node'] for row in sensitivity) == sorted(convs)
    sqnr_db = [row['sqnr_db'] for row in sensitivity]
    assert sqnr_db == sorted(sqnr_db)
    assert all(0 <= row['fp32_convs'] <= len(convs) for row in rows if 'mixed' in row['recipe'])

    # The machine: this CPU as /proc/cpuinfo names it, one thread, start and end.
    model_name, flags = _cpuinfo()
    for moment in ('machine', 'finished'):
        cpu = results[moment]['cpu']
        assert cpu['model_name'] == model_name and cpu['threads'] == 1
        assert ('AVX2' in cpu['isa']) == ('avx2' in flags)
        assert ('AVX512-VNNI' in cpu['isa']) == ('avx512_vnni' in flags)
        assert datetime.datetime.fromisoformat(results[moment]['date']).tzinfo is not None
    assert results['threads'] == 1
    assert f'CPU: {model_name}' in printed

    for name in ('int8.png', 'sqnr.png'):
        with Image.open(outputs[name]) as image:
            assert image.format == 'PNG' and min(image.size) > 100
    assert f"wrote {outputs['int8.json']}" in printed


def _error_line(stderr: str) -> str:
    """The one line a tool's error is: ``error: ...`` (after argparse's usage lines)."""
    line = stderr.strip().splitlines()[-1]
    assert re.match(r'(\S+: )?error: ', line), stderr
    return line


@pytest.mark.parametrize('option', ['--json', '--plot', '--sensitivity-plot'])
def test_int8_accuracy_refuses_an_existing_output_and_leaves_it_as_it_was(
        option, tiny_digits, tiny_checkpoint, tmp_path, capsys):
    config, _ = tiny_digits
    existing = tmp_path / 'figures_of_last_week'
    existing.write_bytes(b'\x89PNG last week\'s figures')
    tool = load_tool('benchmarks/int8_accuracy.py')
    with pytest.raises(SystemExit) as exit_info:
        tool.main(['--model', 'tiny', config, tiny_checkpoint[0], option, str(existing),
                   '--work-dir', str(tmp_path / 'work')])
    assert exit_info.value.code == 2
    assert _error_line(capsys.readouterr().err).endswith(
        f'error: {existing} exists; choose a new file name')
    assert existing.read_bytes() == b'\x89PNG last week\'s figures'
    assert sorted(os.listdir(tmp_path)) == ['figures_of_last_week']  # no work dir either


def test_int8_accuracy_names_a_missing_checkpoint_before_measuring_any_model(
        tiny_digits, tiny_checkpoint, tmp_path, capsys):
    """The second model's checkpoint is missing: one line at once, not after the first
    model's rows."""
    config, _ = tiny_digits
    missing = tmp_path / 'epoch_6.pth'
    tool = load_tool('benchmarks/int8_accuracy.py')
    assert tool.main(['--model', 'first', config, tiny_checkpoint[0],
                      '--model', 'second', config, str(missing),
                      '--work-dir', str(tmp_path / 'work'),
                      '--json', str(tmp_path / 'int8.json')]) == 1
    errors = capsys.readouterr().err
    assert errors.startswith(f'error: {missing}: no such checkpoint file')
    assert errors.count('\n') == 1, errors
    assert not os.listdir(tmp_path)


def test_int8_accuracy_check_images_are_the_first_training_images():
    from types import SimpleNamespace
    measurement_class = load_tool('benchmarks/int8_accuracy.py').Measurement
    train_batches = [(np.arange(start, start + 4), np.arange(start, start + 4) % 3)
                     for start in range(0, 24, 4)]
    for check_images, expected_images in ((None, 16), (6, 6), (8, 8), (100, 24)):
        measurement = SimpleNamespace(args=SimpleNamespace(check_images=check_images),
                                      train_batches=train_batches)
        check = measurement_class.calibration_check(measurement)
        assert np.array_equal(np.concatenate([images for images, _ in check]),
                              np.arange(expected_images))
        assert np.array_equal(np.concatenate([labels for _, labels in check]),
                              np.arange(expected_images) % 3)


BAD_CONFIGS = {
    'another backbone': ("default_scope = 'mmrepvgg'\nmodel = dict(type='ImageClassifier', "
                         "backbone=dict(type='ResNet', depth=18))\n", 'not a RepVGG config'),
    'an unknown arch': ("_base_ = {tiny!r}\nmodel = dict(backbone=dict(arch='Z9'))\n",
                        "unknown RepVGG arch 'Z9'"),
    'not Python': ('model = dict(\n', 'cannot read the config'),
}


def _int8_accuracy_argv(config, checkpoint, tmp_path):
    return ['--model', 'tiny', config, checkpoint, '--work-dir', str(tmp_path / 'work'),
            '--json', str(tmp_path / 'int8.json')]


def _kernel_emulation_argv(config, checkpoint, tmp_path):
    return [config, checkpoint]


@pytest.mark.parametrize('tool_file, argv', [
    ('int8_accuracy.py', _int8_accuracy_argv),
    ('int8_kernel_emulation.py', _kernel_emulation_argv)], ids=['accuracy', 'emulation'])
@pytest.mark.parametrize('what', BAD_CONFIGS)
def test_a_config_that_cannot_build_the_model_is_one_error_line(
        tool_file, argv, what, tiny_digits, tiny_checkpoint, tmp_path, capsys):
    text, message = BAD_CONFIGS[what]
    config = tmp_path / 'bad_config.py'
    config.write_text(text.format(tiny=tiny_digits[0]))
    tool = load_tool(f'benchmarks/{tool_file}')
    assert tool.main(argv(str(config), tiny_checkpoint[0], tmp_path)) == 1
    errors = capsys.readouterr().err
    assert errors.startswith(f'error: {config}: ') and errors.count('\n') == 1, errors
    assert message in errors
    assert os.listdir(tmp_path) == ['bad_config.py']


def test_int8_accuracy_reports_unreadable_data_in_one_line_and_writes_no_json(
        tiny_digits, tiny_checkpoint, tmp_path, capsys):
    """The data is first read in the process that measures the model: its error comes
    back as one line."""
    config = tmp_path / 'no_data.py'
    config.write_text(f"_base_ = {tiny_digits[0]!r}\n"
                      f"train_dataloader = dict(dataset=dict(data_root='{tmp_path}/none'))\n")
    with _importable_int8_accuracy() as tool:
        assert tool.main(_int8_accuracy_argv(str(config), tiny_checkpoint[0], tmp_path)) == 1
    errors = capsys.readouterr().err
    assert errors.startswith(f'error: {config}: cannot read the data of train_dataloader')
    assert errors.count('\n') == 1, errors
    assert not (tmp_path / 'int8.json').exists()


def _markdown_rows(printed: str) -> dict:
    """``{first cell: [other cells]}`` of the data rows of the Markdown table printed."""
    lines = [line for line in printed.splitlines() if line.startswith('| ')]
    return {cells[0]: cells[1:] for cells in
            ([cell.strip() for cell in line.strip('|').split('|')] for line in lines[1:])}


@needs_torch_for_nncf
def test_int8_speed_prints_every_row_with_ratios_of_its_images_per_s(capsys):
    pytest.importorskip('openvino')  # the OpenVINO rows: the [openvino] extra
    from lab.rows import INT8_ONNXRUNTIME, INT8_OPENVINO, ONNXRUNTIME, OPENVINO
    # The tool as a user runs it, in a process (and session) of its own.
    run = _own_session_run([os.path.join(TOOLS, 'int8_speed.py'), '--shape', '32', '32',
                            '--batch-size', '2', '--rounds', '2', '--threads', '1'])
    assert run.returncode == 0, run.stderr[-3000:]
    printed = run.stdout
    here = _default_int8_kernels()
    other = 'u8u8' if here == 'u8s8' else 'u8s8'
    table = _markdown_rows(printed)
    assert list(table) == [
        ONNXRUNTIME, INT8_ONNXRUNTIME, f'{INT8_ONNXRUNTIME} ({other} forced)',
        f'{INT8_ONNXRUNTIME} (7-bit weights, u8s8)', OPENVINO, INT8_OPENVINO,
        'ours deploy FP32, PyTorch eager']
    fp32 = float(table[ONNXRUNTIME][0])
    for name, (images_per_s, ratio) in table.items():
        images_per_s, ratio = float(images_per_s), float(ratio)
        assert images_per_s > 0, name
        # Both printed rounded: images/s to 0.05, the ratio to 0.005.
        assert ((images_per_s - 0.05) / (fp32 + 0.05) - 0.005 <= ratio
                <= (images_per_s + 0.05) / (fp32 - 0.05) + 0.005), name
    assert table[ONNXRUNTIME][1] == '1.00'
    cpu_line = next(line for line in printed.splitlines() if line.startswith('CPU: '))
    assert cpu_line.startswith(f'CPU: {_cpuinfo()[0]} (') and '; 1 thread' in cpu_line
    assert f'ONNX Runtime INT8 kernels on this CPU: {here};' in cpu_line
    assert 'A0 32x32, batch 2, 2 rounds round-robin' in printed


@pytest.mark.parametrize('options', [
    ['--arch', 'Z9'], ['--batch-size', '0'], ['--rounds', '0'], ['--threads', '0'],
    ['--shape', '0', '32']], ids=['unknown arch', 'batch 0', 'rounds 0', 'threads 0', 'height 0'])
def test_int8_speed_refuses_what_cannot_be_timed_before_any_work(options, capsys):
    tool = load_tool('benchmarks/int8_speed.py')
    threads_before = torch.get_num_threads()
    with pytest.raises(SystemExit) as exit_info:
        tool.main(options)
    assert exit_info.value.code == 2
    _error_line(capsys.readouterr().err)
    assert torch.get_num_threads() == threads_before


def test_kernel_emulation_prints_8_and_7_bit_rows_and_7_bit_pairs_never_saturate(
        tiny_digits, tiny_checkpoint, capsys):
    config, _ = tiny_digits
    checkpoint, model, (images, labels) = tiny_checkpoint
    tool = load_tool('benchmarks/int8_kernel_emulation.py')
    assert tool.main([config, checkpoint, '--calib-images', str(CALIBRATION_IMAGES)]) == 0
    printed = capsys.readouterr().out
    assert (f'{checkpoint} on {len(labels)} test images, calibrated on '
            f'{CALIBRATION_IMAGES} training images:') in printed
    top1 = {label: (float(value), float(change)) for label, value, change in re.findall(
        r'^  (.+): top-1 (\d+\.\d\d) % \(([+-]\d+\.\d\d) points\)$', printed, re.M)}
    eight_bit = 'INT8 u8s8 int16-saturated pairs (AVX2, no VNNI)'
    seven_bit = 'INT8 7-bit weights, u8s8 int16-saturated pairs (AVX2 default)'
    assert list(top1) == ['FP32', 'INT8 exact (VNNI / u8u8)', eight_bit, seven_bit]
    assert top1['FP32'][0] == pytest.approx(_top1(_torch_logits(model, images), labels),
                                            abs=0.005)
    for value, change in top1.values():
        assert change == pytest.approx(value - top1['FP32'][0], abs=0.011)
    saturated = {label: (float(mean), float(worst)) for label, mean, worst in re.findall(
        r'^  saturated pairs, (.+): (\d+\.\d{4}) % on average, (\d+\.\d{4}) % in the worst '
        r'conv call$', printed, re.M)}
    assert list(saturated) == [eight_bit, seven_bit]
    assert all(0 <= share <= 100 for shares in saturated.values() for share in shares)
    # Two u8 x s8 products with |weight| <= 64 sum to at most 2 * 255 * 64 = 32640, inside
    # int16 (32767): a 7-bit pair cannot saturate.
    assert 2 * 255 * 64 <= 2 ** 15 - 1
    assert saturated[seven_bit] == (0.0, 0.0)
