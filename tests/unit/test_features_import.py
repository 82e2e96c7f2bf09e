"""`rankserve features import`: every bad input is reported with file, column and rows, and
nothing is written; good input becomes one version (CSV groups, list columns, defaults, dtypes,
kept versions)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rankserve.ranker.table_features import CURRENT, TableFeatures
from rankserve.server.features.importer import ImportOptions, InputProblems, StoreError, run
from rankserve.tools.cli import main


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def store_files(tmp_path: Path) -> list[str]:
    root = tmp_path / "store"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def import_problems(tmp_path: Path, source: Path, **options) -> list[str]:
    with pytest.raises(InputProblems) as info:
        run(ImportOptions("item", source, options.pop("key", "id"), str(tmp_path / "store"),
                          "v1", **options))
    assert [p for p in store_files(tmp_path) if not p.endswith("item")] == []
    return info.value.problems


def test_text_in_a_numeric_csv_column_names_file_column_rows_and_lines(tmp_path):
    rows = "".join(f"i{n},{n}.5,b{n}\n" for n in range(20))
    source = write_csv(tmp_path / "items.csv", "id,price,brand\n" + rows.replace(
        "i4,4.5", "i4,abc").replace("i9,9.5", "i9,n/a"))
    problems = import_problems(tmp_path, source)
    assert problems == [
        f"{source}: column 'price': text in a numeric column at rows 5, 10 (CSV lines 6, 11):"
        " 'abc', 'n/a'; fix those values, or keep the column as text with"
        " --dtype price=string"]


def test_a_column_declared_numeric_is_checked_row_by_row(tmp_path):
    source = write_csv(tmp_path / "items.csv", "id,size,sale\ni1,M,yes\ni2,3,maybe\n")
    problems = import_problems(tmp_path, source, dtypes={"size": "int32", "sale": "bool"})
    assert problems == [f"{source}: column 'size': text in a numeric column at row 1"
                        " (CSV line 2): 'M'; fix those values",
                        f"{source}: column 'sale': not true/false at row 2 (CSV line 3):"
                        " 'maybe'"]


def test_duplicate_keys_list_the_rows_of_the_first_duplicates(tmp_path):
    source = write_csv(tmp_path / "items.csv",
                       "id,price\na,1\nb,2\na,3\nc,4\nb,5\na,6\n")
    problems = import_problems(tmp_path, source)
    assert problems == [f"{source}: column 'id': duplicate keys: 'a' at rows 1, 3, 6"
                        " (CSV lines 2, 4, 7); 'b' at rows 2, 5 (CSV lines 3, 6)"]


def test_empty_keys_are_rejected(tmp_path):
    table = pa.table({"id": ["a", None, "", "d"], "price": [1.0, 2.0, 3.0, 4.0]})
    pq.write_table(table, tmp_path / "items.parquet")
    problems = import_problems(tmp_path, tmp_path / "items.parquet")
    assert problems == [f"{tmp_path / 'items.parquet'}: column 'id': empty key at rows 2, 3"]


def test_nan_and_inf_are_rejected_unless_allowed(tmp_path):
    emb = pa.FixedSizeListArray.from_arrays(
        pa.array(np.array([0, 1, np.inf, 3, 4, 5], np.float32)), 2)
    table = pa.table({"id": ["a", "b", "c"], "price": [1.0, float("nan"), 2.0], "emb": emb})
    source = tmp_path / "items.parquet"
    pq.write_table(table, source)
    problems = import_problems(tmp_path, source)
    assert problems == [
        f"{source}: column 'price': NaN or inf at row 2; fix them, leave them empty (the"
        " default is used), or store them with --allow-nan",
        f"{source}: column 'emb': NaN or inf at row 2; fix them, leave them empty (the default"
        " is used), or store them with --allow-nan"]
    run(ImportOptions("item", source, "id", str(tmp_path / "store"), "v1", allow_nan=True))


async def test_allowed_nan_is_stored_as_it_is(tmp_path):
    source = tmp_path / "items.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "price": [float("nan"), float("inf")]}), source)
    run(ImportOptions("item", source, "id", str(tmp_path / "store"), "v1", allow_nan=True))
    fetched = await TableFeatures(tmp_path / "store", "item").fetch(["a", "b"], ["price"])
    assert np.isnan(fetched.columns["price"][0, 0]) and np.isinf(fetched.columns["price"][1, 0])


def test_lists_of_different_lengths_name_the_row(tmp_path):
    source = tmp_path / "items.parquet"
    pq.write_table(pa.table({"id": ["a", "b", "c"],
                             "emb": [[1.0, 2.0], [3.0, 4.0], [5.0]]}), source)
    problems = import_problems(tmp_path, source)
    assert problems == [f"{source}: column 'emb': row 3 has 1 values, row 1 has 2; every row of"
                        " a vector feature has the same length (differing: row 3)"]


def test_a_column_of_no_feature_type_and_unknown_names_are_reported(tmp_path):
    source = tmp_path / "items.parquet"
    pq.write_table(pa.table({"id": ["a"], "when": pa.array([1], pa.timestamp("ms")),
                             "price": [1.0]}), source)
    problems = import_problems(tmp_path, source, features=["when", "nope"],
                               defaults={"price": "1"})
    assert problems == [
        f"{source}: --features names 'nope', which is neither a column nor a --group; columns:"
        " id, when, price",
        f"{source}: --default/--dtype names 'price', which is not imported; features: when,"
        " nope"]
    problems = import_problems(tmp_path, source, features=["when"])
    assert problems == [f"{source}: column 'when' is timestamp[ms], which no feature type holds"
                        " (numbers, bool, text or lists of them); convert it, or leave it out"
                        " with --features"]


def test_a_bad_default_and_a_missing_key_column(tmp_path):
    source = write_csv(tmp_path / "items.csv", "id,price\na,1.5\n")
    assert import_problems(tmp_path, source, defaults={"price": "cheap"}) == [
        "--default price=cheap: not a float64 value (the feature is float64)"]
    assert import_problems(tmp_path, source, key="item_id") == [
        f"{source}: no key column 'item_id'; its columns: id, price"]


async def test_csv_groups_gather_columns_in_file_order(tmp_path):
    header = "id,brand," + ",".join(f"emb_{i}" for i in range(12)) + ",price"
    lines = [f"i{n},b{n}," + ",".join(str(n * 100 + i) for i in range(12)) + f",{n}.25"
             for n in range(5)]
    lines[2] = lines[2].replace(",203,", ",,")  # a null inside the group
    source = write_csv(tmp_path / "items.csv", "\n".join([header, *lines]) + "\n")
    result = run(ImportOptions("item", source, "id", str(tmp_path / "store"), "v1",
                               groups={"emb": ["emb_*"]}, dtypes={"emb": "float32"},
                               defaults={"emb": "-1"}))
    assert "5 rows, 3 features (brand, price, emb[12])" in str(result)
    store = TableFeatures(tmp_path / "store", "item")
    assert store.schema()["emb"].dtype == "float32" and store.schema()["emb"].width == 12
    fetched = await store.fetch(["i1", "i2"], ["emb", "price", "brand"])
    assert fetched.columns["emb"][0].tolist() == [100 + i for i in range(12)]
    assert fetched.columns["emb"][1, 3] == -1 and fetched.columns["emb"][1, 4] == 204
    assert fetched.missing_values == 1 and fetched.defaulted["emb"] == 1
    assert fetched.columns["price"][:, 0].tolist() == [1.25, 2.25]


def test_group_columns_that_do_not_exist(tmp_path):
    source = write_csv(tmp_path / "items.csv", "id,a,b\nx,1,2\n")
    assert import_problems(tmp_path, source, groups={"v": ["a", "c"]}) == [
        f"{source}: group 'v' names no column 'c'"]
    assert import_problems(tmp_path, source, groups={"v": ["z*"]}) == [
        f"{source}: group 'v' (z*) matches no column"]


def test_versions_are_kept_and_the_current_one_cannot_be_imported_again(tmp_path):
    source = write_csv(tmp_path / "items.csv", "id,price\na,1\n")
    for n in range(1, 5):
        result = run(ImportOptions("item", source, "id", str(tmp_path / "store"), f"v{n}",
                                   keep_versions=2))
    assert result.removed == ("v2",)
    assert store_files(tmp_path) == ["item", "item/CURRENT", "item/v3", "item/v3/features.arrow",
                                     "item/v3/manifest.json", "item/v4",
                                     "item/v4/features.arrow", "item/v4/manifest.json"]
    with pytest.raises(StoreError, match="version v4 is the current one"):
        run(ImportOptions("item", source, "id", str(tmp_path / "store"), "v4"))
    assert (tmp_path / "store" / "item" / CURRENT).read_text() == "v4\n"


def test_cli_reports_every_problem_and_exits_2(tmp_path, capsys):
    source = write_csv(tmp_path / "items.csv", "id,price\na,1\na,x\nb,2\nc,3\n")
    code = main(["features", "import", "--entity", "item", "--input", str(source), "--key",
                 "id", "--store", str(tmp_path / "store"), "--version", "v1"])
    err = capsys.readouterr().err
    assert code == 2
    assert "nothing was written; 2 problem(s):" in err
    assert "column 'id': duplicate keys: 'a' at rows 1, 2" in err
    assert "column 'price': text in a numeric column at row 2 (CSV line 3): 'x'" in err
    assert not (tmp_path / "store").exists()


def test_cli_imports_and_prints_one_summary_line(tmp_path, capsys):
    source = write_csv(tmp_path / "users.csv", "user_id,age,segment\n7,31,a\n8,40,b\n")
    code = main(["features", "import", "--entity", "user", "--input", str(source), "--key",
                 "user_id", "--store", str(tmp_path / "store"), "--version", "2026-12-01",
                 "--dtype", "age=int32", "--default", "segment=none"])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0 and len(out) == 1
    assert out[0].startswith("imported user features version 2026-12-01: 2 rows, 2 features"
                             " (age, segment) into ")
    assert (tmp_path / "store" / "user" / CURRENT).read_text() == "2026-12-01\n"


def test_help_explains_every_flag_with_an_example(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["features", "import", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--entity", "--input", "--key", "--store", "--version", "--features", "--group",
                 "--default", "--dtype", "--keep-versions", "--allow-nan", "--prefix"):
        assert flag in text
    assert "examples:" in text and "redis://127.0.0.1:6379/0" in text


def test_progress_says_rows_done_of_total_and_rate_at_most_once_a_second():
    import io

    from rankserve.server.features.writers import Progress

    out = io.StringIO()
    progress = Progress("item features v1", 100_000, out)
    progress.update(10)  # under a second since the start: quiet
    progress.started -= 2.0
    progress.last -= 2.0
    progress.update(50_000)
    progress.update(60_000)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("item features v1: 50000/100000 rows, ")
    assert lines[0].endswith(" rows/s")
