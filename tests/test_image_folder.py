"""Image folder listing and image lists."""
import os

import pytest

from soco.data.image_folder import image_folder_dicts, list_images, read_image_list


@pytest.fixture
def tree(tmp_path):
    for rel in ["n02/b.JPEG", "n02/a.jpg", "n01/x.png", "top.jpeg", "n01/notes.txt", "n01/sub/deep.PNG"]:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    return tmp_path


def test_recursive_sorted_relative_paths_with_image_extensions(tree):
    assert list_images(str(tree)) == ["n01/sub/deep.PNG", "n01/x.png", "n02/a.jpg", "n02/b.JPEG", "top.jpeg"]


def test_image_list_with_labels_comments_and_blank_lines(tree):
    listing = tree / "train.txt"
    listing.write_text("# comment\nn02/b.JPEG 3\n\nn01/x.png\nn02/a.jpg -1\nn02/b.JPEG 3\n")
    assert read_image_list(str(listing)) == ["n02/b.JPEG", "n01/x.png", "n02/a.jpg", "n02/b.JPEG"]
    assert list_images(str(tree), str(listing)) == ["n01/x.png", "n02/a.jpg", "n02/b.JPEG"]


def test_absolute_paths_in_a_list_are_rejected_naming_the_line(tree):
    listing = tree / "bad.txt"
    listing.write_text("n01/x.png\n/abs/path.jpg\n")
    with pytest.raises(ValueError, match="bad.txt:2"):
        read_image_list(str(listing))


def test_missing_root_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        list_images(str(tmp_path / "nope"))


def test_dataset_dicts(tree):
    dicts = image_folder_dicts(str(tree))
    assert [d["image_id"] for d in dicts] == list_images(str(tree))
    assert all(os.path.isabs(d["file_name"]) and os.path.exists(d["file_name"]) for d in dicts)
    assert dicts[0]["file_name"].endswith(os.path.join("n01", "sub", "deep.PNG"))
