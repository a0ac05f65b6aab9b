"""Annotation parsers on small files written in each dataset's official format."""

from __future__ import annotations

from pathlib import Path

import pytest

from lgdnet.data.annotations import detect_format, load_annotations, load_classes, save_classes
from lgdnet.errors import AnnotationError

FIXTURES = Path(__file__).parent / "data" / "annotations"


def test_ucf101_train_and_test_lists(tmp_path):
    train = load_annotations(FIXTURES / "ucf101", root=tmp_path, split=1, subset="train")
    assert train.classes == ["ApplyEyeMakeup", "Archery", "SoccerJuggling"]
    assert [r.label for r in train.records] == [0, 0, 1, 2]  # 1-based in the file
    assert train.records[3].path == str(tmp_path / "SoccerJuggling" / "v_SoccerJuggling_g23_c01.avi")
    assert train.records[3].video_id == "SoccerJuggling/v_SoccerJuggling_g23_c01"
    test = load_annotations(FIXTURES / "ucf101", root=tmp_path, subset="test")
    assert [r.label for r in test.records] == [0, 1, 2]  # from the folder name via classInd
    assert test.origins[1].endswith("testlist01.txt:2")
    # "val" reads the test list; a list file given directly works too.
    assert load_annotations(FIXTURES / "ucf101", root=tmp_path, subset="val").records == test.records
    direct = load_annotations(FIXTURES / "ucf101" / "trainlist01.txt", root=tmp_path)
    assert direct.records == train.records


def test_ucf101_bad_split_number():
    with pytest.raises(AnnotationError, match="bad split number 2"):
        load_annotations(FIXTURES / "ucf101", split=2)
    with pytest.raises(AnnotationError, match="bad split number 0"):
        load_annotations(FIXTURES / "ucf101", split=0)


def test_hmdb51_flags_and_splits(tmp_path):
    train = load_annotations(FIXTURES / "hmdb51", root=tmp_path, split=1, subset="train")
    assert train.classes == ["brush_hair", "ride_bike", "wave"]
    assert [(Path(r.path).parent.name, r.label) for r in train.records] == [("brush_hair", 0), ("ride_bike", 1), ("wave", 2)]
    assert train.records[2].path == str(tmp_path / "wave" / "RATRACE_wave_f_nm_np1_fr_goo_37.avi")
    test = load_annotations(FIXTURES / "hmdb51", root=tmp_path, split=1, subset="test")
    assert [r.video_id for r in test.records] == [
        "brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_1",
        "ride_bike/Bikeride_ride_bike_f_cm_np1_ba_med_0",
        "wave/RATRACE_wave_f_nm_np1_fr_goo_38",
    ]  # flag 0 (unused) lines appear in neither subset
    split2 = load_annotations(FIXTURES / "hmdb51", root=tmp_path, split=2, subset="test")
    assert [r.label for r in split2.records] == [0, 2]
    with pytest.raises(AnnotationError, match="bad split number 3"):
        load_annotations(FIXTURES / "hmdb51", split=3)


def test_kinetics_csv_subsets_and_classes(tmp_path):
    train = load_annotations(FIXTURES / "kinetics" / "kinetics400_sample.csv", root=tmp_path)
    assert train.classes == ["abseiling", "air drumming", "zumba"]  # sorted, over every split
    assert [r.video_id for r in train.records] == ["--07WQ2iBlw_000001_000011", "--nQbRBEz2s_000104_000114", "R6llTwEh07w_000000_000010"]
    assert [r.label for r in train.records] == [0, 1, 2]
    val = load_annotations(FIXTURES / "kinetics" / "kinetics400_sample.csv", root=tmp_path, subset="val")
    assert [r.label for r in val.records] == [1, 0]
    with pytest.raises(AnnotationError, match="no rows with split 'test'"):
        load_annotations(FIXTURES / "kinetics" / "kinetics400_sample.csv", root=tmp_path, subset="test")


def test_kinetics_file_resolution_flat_and_class_folders(tmp_path):
    csv_path = FIXTURES / "kinetics" / "kinetics400_sample.csv"
    (tmp_path / "abseiling").mkdir()
    (tmp_path / "abseiling" / "--07WQ2iBlw_000001_000011.mp4").write_bytes(b"x")
    (tmp_path / "air_drumming").mkdir()  # spaces replaced by underscores
    (tmp_path / "air_drumming" / "--nQbRBEz2s_000104_000114.mkv").write_bytes(b"x")
    (tmp_path / "R6llTwEh07w_000000_000010.mp4").write_bytes(b"x")  # flat
    paths = [Path(r.path) for r in load_annotations(csv_path, root=tmp_path).records]
    assert paths == [
        tmp_path / "abseiling" / "--07WQ2iBlw_000001_000011.mp4",
        tmp_path / "air_drumming" / "--nQbRBEz2s_000104_000114.mkv",
        tmp_path / "R6llTwEh07w_000000_000010.mp4",
    ]
    # Missing files resolve to the flat name, so check-data can report them.
    val = load_annotations(csv_path, root=tmp_path, subset="val")
    assert Path(val.records[0].path) == tmp_path / "-0P0mD0wPl8_000026_000036.mp4"


def test_plain_lists_with_indices_names_and_rawframes(tmp_path):
    indexed = load_annotations(FIXTURES / "lists" / "videos_index.txt", root=tmp_path)
    assert indexed.classes == ["0", "1", "2"]  # derived: no classes.txt beside this list
    assert [r.label for r in indexed.records] == [2, 1, 0]
    assert indexed.origins[2].endswith("videos_index.txt:5")  # comment and blank line skipped
    named = load_annotations(FIXTURES / "lists" / "named" / "videos_names.txt", root=tmp_path)
    assert named.classes == ["zumba", "wave", "SoccerJuggling"]  # from classes.txt beside it
    assert [r.label for r in named.records] == [2, 1, 0]
    assert [r.video_id for r in named.records][0] == "videos/v_SoccerJuggling_g23_c01"
    derived = load_annotations(FIXTURES / "lists" / "names_no_classes.txt")
    assert derived.classes == ["jump", "run"] and [r.label for r in derived.records] == [0, 1, 0]
    assert derived.records[0].path == str(FIXTURES / "lists" / "a" / "x1.mp4")  # root defaults to the list's folder
    raw = load_annotations(FIXTURES / "lists" / "rawframes.txt", root=tmp_path, classes=["a", "wave", "SoccerJuggling"])
    assert [(r.video_id, r.num_frames, r.label) for r in raw.records] == [
        ("SoccerJuggling/v_SoccerJuggling_g23_c01", 240, 2), ("wave/RATRACE_wave_f_nm_np1_fr_goo_37", 72, 1)]


def test_detect_format():
    assert detect_format(FIXTURES / "ucf101") == "ucf101"
    assert detect_format(FIXTURES / "ucf101" / "testlist01.txt") == "ucf101"
    assert detect_format(FIXTURES / "hmdb51") == "hmdb51"
    assert detect_format(FIXTURES / "kinetics" / "kinetics400_sample.csv") == "kinetics"
    assert detect_format(FIXTURES / "lists" / "rawframes.txt") == "list"


def test_classes_round_trip_and_classind(tmp_path):
    save_classes(tmp_path / "classes.txt", ["air drumming", "zumba"])
    assert load_classes(tmp_path / "classes.txt") == ["air drumming", "zumba"]
    assert load_classes(FIXTURES / "ucf101" / "classInd.txt") == ["ApplyEyeMakeup", "Archery", "SoccerJuggling"]
    (tmp_path / "dup.txt").write_text("a\nb\na\n")
    with pytest.raises(AnnotationError, match="repeats line 1") as caught:
        load_classes(tmp_path / "dup.txt")
    assert caught.value.line == 3


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


LIST_ERRORS = [
    ("a.mp4 0\nb.mp4 wrestle\n", 2, "unknown class name 'wrestle'"),
    ("a.mp4 0\nb.mp4\n", 2, "got 1 fields"),
    ("a.mp4 0\n\nb.mp4 1 2 3\n", 3, "got 4 fields"),
    ("a.mp4 1.5\n", 1, "not an integer"),
    ("a.mp4 0\nb.mp4 7\n", 2, "out of range for 2 classes"),
    ("a.mp4 -1\n", 1, "out of range"),
    ("frames/a x 1\n", 1, "num_frames 'x'"),
]


@pytest.mark.parametrize("text, line, reason", LIST_ERRORS)
def test_list_malformed_lines_name_file_and_line(tmp_path, text, line, reason):
    path = _write(tmp_path, "list.txt", text)
    with pytest.raises(AnnotationError, match=reason) as caught:
        load_annotations(path, classes=["run", "jump"])
    assert (caught.value.path, caught.value.line) == (str(path), line)
    assert f"list.txt:{line}:" in str(caught.value)


def test_collect_mode_keeps_good_lines_and_every_error(tmp_path):
    path = _write(tmp_path, "list.txt", "a.mp4 run\nb.mp4 swim\nc.mp4 1\nd.mp4 9\n")
    result = load_annotations(path, classes=["run", "jump"], errors="collect")
    assert [r.video_id for r in result.records] == ["a", "c"]
    assert [(e.line, e.reason) for e in result.errors] == [(2, "unknown class name 'swim'"), (4, "label 9 is out of range for 2 classes")]


def test_ucf101_malformed_lines(tmp_path):
    folder = tmp_path / "splits"
    _write(folder, "classInd.txt", "1 Archery\n2 Bowling\n")
    cases = [
        ("trainlist01.txt", "Archery/v_a.avi 1\nBowling/v_b.avi x\n", 2, "label 'x' is not an integer"),
        ("trainlist01.txt", "Archery/v_a.avi 3\n", 1, "out of range 1..2"),
        ("trainlist01.txt", "Archery/v_a.avi\n", 1, "got 1 fields"),
        ("trainlist01.txt", "Archery/v_a.avi 1\nArchery/v_b.avi 2\n", 2, "disagrees with the folder 'Archery'"),
        ("testlist01.txt", "Archery/v_a.avi\nDiving/v_c.avi\n", 2, "'Diving' has no entry in classInd.txt"),
    ]
    for name, text, line, reason in cases:
        list_path = _write(folder, name, text)
        with pytest.raises(AnnotationError, match=reason) as caught:
            load_annotations(folder, subset="train" if name.startswith("train") else "test")
        assert (caught.value.path, caught.value.line) == (str(list_path), line)
    (folder / "classInd.txt").unlink()
    with pytest.raises(AnnotationError, match="classInd.txt"):
        load_annotations(folder, format="ucf101")


def test_hmdb51_malformed_lines(tmp_path):
    folder = tmp_path / "splits"
    bad_flag = _write(folder, "jump_test_split1.txt", "a.avi 1\nb.avi 3\n")
    with pytest.raises(AnnotationError, match="flag '3'") as caught:
        load_annotations(folder)
    assert (caught.value.path, caught.value.line) == (str(bad_flag), 2)
    _write(folder, "jump_test_split1.txt", "a.avi 1\nb.avi\n")
    with pytest.raises(AnnotationError, match="got 1 fields") as caught:
        load_annotations(folder)
    assert caught.value.line == 2


def test_kinetics_malformed_rows(tmp_path):
    header = "label,youtube_id,time_start,time_end,split\n"
    cases = [
        (header + "run,abc,1,11,train\njump,def,1,11\n", 3, "expected 5 fields, got 4"),
        (header + "run,abc,one,11,train\n", 2, "time_start 'one'"),
        (header + "run,abc,1,11,train\nswim,def,1,11,train\n", 3, "unknown class name 'swim'"),
    ]
    for text, line, reason in cases:
        path = _write(tmp_path, "k.csv", text)
        with pytest.raises(AnnotationError, match=reason) as caught:
            load_annotations(path, classes=["jump", "run"])
        assert (caught.value.path, caught.value.line) == (str(path), line)
    path = _write(tmp_path, "k.csv", "youtube_id,time_start\nabc,1\n")
    with pytest.raises(AnnotationError, match="header lacks column"):
        load_annotations(path)
