"""prepare_digits writes the digits once and refuses a folder that holds something else."""
import pytest

from mmrepvgg.datasets import prepare_digits


def test_a_second_call_finds_the_data_and_writes_nothing(digits_workspace):
    split = prepare_digits(str(digits_workspace / 'data' / 'digits'))
    assert not split.created


@pytest.mark.parametrize('layout', ['empty', 'some class folders', 'a class is a file'])
def test_a_folder_that_is_not_the_digits_is_refused_and_left_alone(layout, tmp_path):
    data_root = tmp_path / 'digits'
    (data_root / 'train').mkdir(parents=True)
    if layout == 'some class folders':
        (data_root / 'train' / '3').mkdir()
        (data_root / 'train' / '3' / 'mine.png').write_bytes(b'not the digits')
    elif layout == 'a class is a file':
        (data_root / 'train' / '0').write_text('a file where a class folder would be')
    before = sorted(path.relative_to(data_root) for path in data_root.rglob('*'))
    with pytest.raises(FileExistsError, match='is not the digits data set'):
        prepare_digits(str(data_root))
    assert sorted(path.relative_to(data_root) for path in data_root.rglob('*')) == before
