"""Tests for fmrec.data.readers: formats, sniffing, ID policy, and one-line errors."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fmrec.data import Interactions, read_interactions, read_item_names
from fmrec.errors import ConfigError, DataError


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return p


def assert_error(exc: pytest.ExceptionInfo[DataError], path: Path, line: int | None, value: Any = None) -> str:
    """The message is one line and names the file, the line and the offending value."""
    msg = str(exc.value)
    assert "\n" not in msg and "\r" not in msg, msg
    assert path.name in msg, msg
    if line is not None:
        assert f"{path.name}:{line}:" in msg, msg
    if value is not None:
        assert repr(value) in msg, msg
    return msg


def pairs(x: Interactions) -> set[tuple[str, str]]:
    df = x.to_frame()
    return {(str(u), str(i)) for u, i in zip(df["user_id"], df["item_id"])}


UDATA = "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n"


# ------------------------------------------------------------------ formats that work
class TestFormats:
    def test_headerless_udata(self, tmp_path: Path) -> None:
        x = read_interactions(write(tmp_path, "u.data", UDATA))
        assert len(x) == 3 and x.user_map.is_integer and x.item_map.is_integer
        assert x.user_map.ids.tolist() == [196, 186, 22]
        assert x.rating.tolist() == [3.0, 3.0, 1.0]
        assert x.timestamp.tolist() == [881250949, 891717742, 878887116]

    def test_headerless_any_name_is_sniffed(self, tmp_path: Path) -> None:
        x = read_interactions(write(tmp_path, "mine.txt", UDATA))
        assert len(x) == 3 and x.timestamp is not None

    def test_headerless_three_and_two_columns(self, tmp_path: Path) -> None:
        x = read_interactions(write(tmp_path, "r.tsv", "1\t2\t4.5\n2\t3\t1\n"))
        assert x.rating.tolist() == [4.5, 1.0] and x.timestamp is None
        y = read_interactions(write(tmp_path, "implicit.tsv", "1\t2\n2\t3\n"))
        assert y.rating is None and len(y) == 2

    @pytest.mark.parametrize(
        "header",
        ["userId,movieId,rating,timestamp", "user_id,item_id,rating,timestamp", "user,item,rating,timestamp"],
    )
    def test_recognised_headers(self, tmp_path: Path, header: str) -> None:
        p = write(tmp_path, "r.csv", f"{header}\n1,10,4.0,100\n2,10,3.5,200\n")
        x = read_interactions(p)
        assert len(x) == 2 and x.rating.tolist() == [4.0, 3.5] and x.timestamp.tolist() == [100, 200]

    def test_user_item_rating_without_timestamp(self, tmp_path: Path) -> None:
        x = read_interactions(write(tmp_path, "r.csv", "user,item,rating\na,b,1\nc,b,2\n"))
        assert x.timestamp is None and x.user_map.ids.tolist() == ["a", "c"]

    def test_implicit_header_file(self, tmp_path: Path) -> None:
        x = read_interactions(write(tmp_path, "r.csv", "user_id,item_id\n1,2\n"))
        assert x.rating is None

    def test_configured_columns(self, tmp_path: Path) -> None:
        p = write(tmp_path, "r.csv", "who,what,stars,when,extra\n1,2,5,9,x\n3,2,4,8,y\n")
        x = read_interactions(p, user_col="who", item_col="what", rating_col="stars", timestamp_col="when")
        assert x.rating.tolist() == [5.0, 4.0] and x.timestamp.tolist() == [9, 8]

    @pytest.mark.parametrize("sep", ["\t", ",", "|", ";", "::"])
    def test_delimiters_sniffed(self, tmp_path: Path, sep: str) -> None:
        body = sep.join(["user", "item", "rating"]) + "\n" + "\n".join(
            sep.join(r) for r in [("u1", "i1", "1"), ("u2", "i1", "2.5")]
        ) + "\n"
        x = read_interactions(write(tmp_path, "r.txt", body))
        assert pairs(x) == {("u1", "i1"), ("u2", "i1")}
        assert x.rating.tolist() == [1.0, 2.5]

    def test_ml1m_double_colon_headerless(self, tmp_path: Path) -> None:
        x = read_interactions(write(tmp_path, "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n"))
        assert x.item_map.ids.tolist() == [1193, 661] and x.timestamp.tolist() == [978300760, 978302109]

    def test_explicit_sep_and_tsv_format(self, tmp_path: Path) -> None:
        p = write(tmp_path, "r.dat", "user\titem\trating\n1\t2\t3\n")
        assert len(read_interactions(p, format="tsv")) == 1
        assert len(read_interactions(p, sep="\t")) == 1

    def test_crlf_and_bom(self, tmp_path: Path) -> None:
        p = write(tmp_path, "r.csv", b"\xef\xbb\xbfuserId,movieId,rating\r\n1,2,3\r\n4,5,6\r\n")
        x = read_interactions(p)
        assert len(x) == 2 and x.rating.tolist() == [3.0, 6.0]

    def test_trailing_blank_lines_ignored(self, tmp_path: Path) -> None:
        x = read_interactions(write(tmp_path, "u.data", UDATA + "\n\n"))
        assert len(x) == 3

    def test_no_final_newline(self, tmp_path: Path) -> None:
        x = read_interactions(write(tmp_path, "u.data", UDATA.rstrip("\n")))
        assert len(x) == 3

    def test_negative_and_fractional_ratings_allowed(self, tmp_path: Path) -> None:
        x = read_interactions(write(tmp_path, "r.csv", "user,item,rating\n1,2,-1.5\n1,3,0.25\n"))
        assert x.rating.tolist() == [-1.5, 0.25]

    def test_quoted_fields(self, tmp_path: Path) -> None:
        p = write(tmp_path, "r.csv", 'user,item,rating\n"a,b",x,1\n"say ""hi""",x,2\n')
        x = read_interactions(p)
        assert x.user_map.ids.tolist() == ["a,b", 'say "hi"']

    def test_parquet(self, tmp_path: Path) -> None:
        df = pd.DataFrame({"userId": [1, 2], "movieId": ["007", "7"], "rating": [4.0, 5.0]})
        p = tmp_path / "r.parquet"
        df.to_parquet(p)
        x = read_interactions(p)
        assert x.user_map.ids.tolist() == [1, 2]
        assert x.item_map.ids.tolist() == ["007", "7"]  # a string column stays strings
        q = tmp_path / "noext"
        df.to_parquet(q)
        assert len(read_interactions(q)) == 2  # detected by the PAR1 magic bytes
        assert len(read_interactions(q, format="parquet")) == 2

    def test_dataframe_source(self) -> None:
        df = pd.DataFrame({"user_id": ["a", "b"], "item_id": [1, 2], "rating": [1.0, 2.0]})
        x = read_interactions(df)
        assert x.user_map.ids.tolist() == ["a", "b"] and x.item_map.ids.tolist() == [1, 2]
        with pytest.raises(DataError, match="row 2"):
            read_interactions(pd.DataFrame({"user": [1, 2], "item": [1, 2], "rating": [1.0, np.nan]}))

    def test_maps_are_passed_on(self, tmp_path: Path) -> None:
        train = read_interactions(write(tmp_path, "a.base", "1\t1\t5\t1\n2\t2\t4\t2\n"))
        test = read_interactions(
            write(tmp_path, "a.test", "2\t1\t3\t3\n"), user_map=train.user_map, item_map=train.item_map
        )
        assert test.user_map == train.user_map and test.user_idx.tolist() == [1] and test.item_idx.tolist() == [0]

    def test_duplicates_policy(self, tmp_path: Path) -> None:
        p = write(tmp_path, "r.csv", "user,item,rating\n1,2,1\n1,2,5\n")
        assert read_interactions(p, duplicates="last").rating.tolist() == [5.0]
        assert read_interactions(p, duplicates="mean").rating.tolist() == [3.0]

    def test_unusual_explicit_separators(self, tmp_path: Path) -> None:
        x = read_interactions(write(tmp_path, "r.txt", "user§item§rating\n1§2§3\n"), sep="§")
        assert x.rating.tolist() == [3.0]
        y = read_interactions(write(tmp_path, "s.txt", "1 2 3\n4 5 6\n"), sep=" ")
        assert y.item_map.ids.tolist() == [2, 5]
        with pytest.raises(ConfigError):
            read_interactions(write(tmp_path, "t.txt", "1,2\n"), sep="\n")

    def test_unknown_format(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError):
            read_interactions(write(tmp_path, "r.csv", "a,b\n"), format="xlsx")  # type: ignore[arg-type]


# ---------------------------------------------------------------------- ID policy
class TestIds:
    def test_leading_zeros_stay_strings(self, tmp_path: Path) -> None:
        x = read_interactions(write(tmp_path, "r.csv", "user,item,rating\n007,1,1\n7,2,1\n"))
        assert x.user_map.ids.tolist() == ["007", "7"]  # whole column stays text: 007 != 7
        assert x.item_map.ids.tolist() == [1, 2]

    def test_integers_become_int64(self, tmp_path: Path) -> None:
        x = read_interactions(write(tmp_path, "r.csv", "user,item,rating\n-3,0,1\n12,9223372036854775807,1\n"))
        assert x.user_map.ids.dtype == np.int64 and x.user_map.ids.tolist() == [-3, 12]
        assert x.item_map.ids.tolist() == [0, 9223372036854775807]

    def test_too_big_or_odd_integers_stay_strings(self, tmp_path: Path) -> None:
        x = read_interactions(write(tmp_path, "r.csv", "user,item,rating\n99999999999999999999,+1,1\n1,1.0,1\n"))
        assert x.user_map.ids.tolist() == ["99999999999999999999", "1"]
        assert x.item_map.ids.tolist() == ["+1", "1.0"]

    def test_surrounding_whitespace_stripped(self, tmp_path: Path) -> None:
        x = read_interactions(write(tmp_path, "r.csv", "user, item, rating\n 1 , 2, 3\n"))
        assert x.user_map.ids.tolist() == [1] and x.item_map.ids.tolist() == [2]

    def test_na_like_strings_are_ids(self, tmp_path: Path) -> None:
        x = read_interactions(write(tmp_path, "r.csv", "user,item,rating\nNA,null,1\nnan,None,2\n"))
        assert x.user_map.ids.tolist() == ["NA", "nan"] and x.item_map.ids.tolist() == ["null", "None"]


id_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=8
).filter(lambda s: s == s.strip() and s != "")
any_id = st.one_of(st.integers(min_value=-(10**6), max_value=10**12).map(str), id_text)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(any_id, any_id), min_size=1, max_size=25, unique=True))
def test_round_trip_csv_property(tmp_path: Path, rows: list[tuple[str, str]]) -> None:
    """Writing (user, item, rating) rows with the csv module and reading them back keeps every pair."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["user_id", "item_id", "rating"])
    for k, (u, i) in enumerate(rows):
        w.writerow([u, i, k % 5 + 0.5])
    p = tmp_path / "prop.csv"
    p.write_text(buf.getvalue(), encoding="utf-8")
    x = read_interactions(p)
    assert len(x) == len(rows)
    df = x.to_frame()
    got = [(str(u), str(i)) for u, i in zip(df["user_id"], df["item_id"])]
    assert got == rows
    assert x.rating.tolist() == [k % 5 + 0.5 for k in range(len(rows))]


#: (file name, content, message regex, read_interactions options, line, offending value) of a bad file;
#: the ids are the names these cases had as separate tests.
ONE_LINE_ERRORS = [
    pytest.param("empty.csv", b"", "empty file",
                 {}, None, None, id="empty_file"),
    pytest.param("blank.csv", "\n\r\n", "empty file",
                 {}, None, None, id="only_blank_lines"),
    pytest.param("head.csv", "userId,movieId,rating,timestamp\n", "no data rows",
                 {}, 1, "userId,movieId,rating,timestamp", id="header_only"),
    pytest.param("spaces.txt", "1 2 3 4\n5 6 7 8\n", "delimiter",
                 {}, 1, "1 2 3 4", id="unknown_delimiter"),
    pytest.param("u.data", UDATA, "1 field",
                 {"sep": ","}, 1, "196\t242\t3\t881250949", id="wrong_explicit_delimiter"),
    pytest.param("u.data", UDATA + "7,8,3,881250949\n1\t2\t3\t4\n", "expected 4 fields separated by tab, found 1",
                 {}, 4, "7,8,3,881250949", id="line_with_other_delimiter"),
    pytest.param("r.csv", "user,item,rating\n1,2,3\n1,3,4,5\n2,2,1\n", "expected 3 fields",
                 {}, 3, "1,3,4,5", id="line_with_extra_field"),
    pytest.param("q.csv", 'user,item,rating\n"a",b,1\n"c",d\n"e",f,2\n', "expected 3 fields",
                 {}, 3, '"c",d', id="field_count_in_quoted_csv"),
    pytest.param("u.data", UDATA + "5\t6", "truncated last line",
                 {}, 4, "5\t6", id="truncated_last_line"),
    pytest.param("ratings.csv", "userId,movieId,rating,timestamp\r\n1,1,4.0,964982703\r\n1,3,4.", "truncated last line",
                 {}, 3, "1,3,4.", id="truncated_last_line_crlf_csv"),
    pytest.param("u.data", UDATA.encode() + b"\xff\t1\t1\t1\n", "UTF-8",
                 {}, 4, "\\xff\t1\t1\t1", id="not_utf8_in_headerless_file"),
    pytest.param("dup.csv", "user_id,item_id,rating,rating\n1,2,3,4\n", "duplicate column name",
                 {}, 1, "rating", id="duplicate_header_names"),
    pytest.param("r.csv", "user_id,item_id,rating\n1,2,3\n", "not found",
                 {"rating_col": "stars"}, 1, "stars", id="missing_configured_column"),
    pytest.param("r.csv", "a,b,c\nx,y,1\n", "no user column",
                 {}, 1, "a,b,c", id="unrecognised_header"),
    pytest.param("u.data", UDATA + "1\t2\tfive\t3\n", "column 'rating'",
                 {}, 4, "five", id="bad_rating_headerless"),
    pytest.param("r.csv", "user,item,rating\n1,2,3\nuser,item,rating\n", None,
                 {}, 3, "rating", id="header_in_the_middle"),
    pytest.param("r.csv", "user,item,rating\n1,2,3\n ,3,4\n", "empty ID",
                 {}, 3, "", id="empty_id"),
    pytest.param("r.csv", "user,item,rating\n1,2,3\n4,5,6\n1,2,1\n", "first seen on line 2",
                 {}, 4, "1,2", id="duplicate_pair"),
    pytest.param("u.data", UDATA + "\n" + "1\t2\t3\t4\n", "blank line",
                 {}, 4, "", id="blank_line_between_rows"),
    pytest.param("u.data", UDATA + "1\t2\t3\t4\r5\t6\t7\t8\n", "carriage return",
                 {}, 4, "1\t2\t3\t4\r5\t6\t7\t8", id="bare_carriage_return"),
    pytest.param("r.csv", 'user,item,rating\n"a\nb",c,1\n', "line break",
                 {}, 2, '"a', id="line_break_in_quoted_field"),
    pytest.param("bad.parquet", b"PAR1 not really", "Parquet",
                 {}, None, None, id="bad_parquet"),
]


# ------------------------------------------------------------------------- errors
class TestErrors:
    def test_file_not_found(self, tmp_path: Path) -> None:
        p = tmp_path / "missing.csv"
        with pytest.raises(DataError, match="not found") as e:
            read_interactions(p)
        assert_error(e, p, None)

    def test_folder_instead_of_file(self, tmp_path: Path) -> None:
        with pytest.raises(DataError, match="folder") as e:
            read_interactions(tmp_path)
        assert_error(e, tmp_path, None)

    @pytest.mark.parametrize(("name", "content", "match", "kwargs", "line", "value"), ONE_LINE_ERRORS)
    def test_one_line_error(self, tmp_path: Path, name: str, content: str | bytes, match: str | None,
                            kwargs: dict[str, Any], line: int | None, value: Any) -> None:
        p = write(tmp_path, name, content)
        with pytest.raises(DataError, match=match) as e:
            read_interactions(p, **kwargs)
        assert_error(e, p, line, value)

    def test_not_utf8(self, tmp_path: Path) -> None:
        p = write(tmp_path, "latin.csv", "user,item,rating\nbob,Cafe,1\n".encode() + "ana,Café,2\n".encode("latin-1"))
        with pytest.raises(DataError, match="not valid UTF-8") as e:
            read_interactions(p)
        msg = assert_error(e, p, 3, "ana,Caf\\xe9,2")
        assert "0xe9" in msg

    @pytest.mark.parametrize("name,fmt", [("u.data", None), ("ua.base", None), ("plain.tsv", "movielens")])
    def test_header_where_headerless_expected(self, tmp_path: Path, name: str, fmt: Any) -> None:
        p = write(tmp_path, name, "user\titem\trating\ttimestamp\n1\t2\t3\t4\n")
        with pytest.raises(DataError, match="header row where a headerless file") as e:
            read_interactions(p, format=fmt)
        assert_error(e, p, 1, "user\titem\trating\ttimestamp")

    @pytest.mark.parametrize("bad", ["nan", "inf", "-inf", "x", ""])
    def test_bad_rating(self, tmp_path: Path, bad: str) -> None:
        p = write(tmp_path, "r.csv", f"user_id,item_id,rating\n1,2,3\n1,3,{bad}\n")
        with pytest.raises(DataError, match="rating") as e:
            read_interactions(p)
        assert_error(e, p, 3, bad)

    def test_parquet_bad_rating_names_row(self, tmp_path: Path) -> None:
        p = tmp_path / "r.parquet"
        pd.DataFrame({"user_id": [1, 2, 3], "item_id": [1, 1, 1], "rating": [1.0, 2.0, np.inf]}).to_parquet(p)
        with pytest.raises(DataError, match="finite") as e:
            read_interactions(p)
        assert_error(e, p, 3)


# ------------------------------------------------------------- real MovieLens files
@pytest.mark.movielens
class TestMovieLens:
    def test_u_data(self, ml100k: Path) -> None:
        x = read_interactions(ml100k / "u.data")
        assert (len(x), x.n_users, x.n_items) == (100_000, 943, 1682)
        assert set(np.unique(x.rating).tolist()) == {1.0, 2.0, 3.0, 4.0, 5.0}
        assert sorted(x.user_map.ids.tolist()) == list(range(1, 944))
        assert x.timestamp is not None and x.timestamp.min() > 8e8

    def test_ua_split_shares_maps(self, ml100k: Path) -> None:
        train = read_interactions(ml100k / "ua.base")
        test = read_interactions(ml100k / "ua.test", user_map=train.user_map, item_map=train.item_map)
        assert len(train) == 90_570 and len(test) == 9_430
        assert np.bincount(test.user_idx).tolist() == [10] * 943
        assert test.user_map == train.user_map  # every test user is in training

    def test_latest_small_crlf(self, shared_data: Path) -> None:
        p = shared_data / "ml-latest-small" / "ratings.csv"
        assert b"\r\n" in p.read_bytes()[:100]
        x = read_interactions(p)
        assert (len(x), x.n_users, x.n_items) == (100_836, 610, 9_724)
        assert float(x.rating.min()) == 0.5 and float(x.rating.max()) == 5.0

    def test_item_names_u_item(self, ml100k: Path) -> None:
        names = read_item_names(ml100k / "u.item")
        assert len(names) == 1682 and names[1] == "Toy Story (1995)"
        assert names[543] == "Misérables, Les (1995)"  # Latin-1 decoded

    def test_item_names_movies_csv(self, shared_data: Path) -> None:
        names = read_item_names(shared_data / "ml-latest-small" / "movies.csv")
        assert len(names) == 9_742 and names[1] == "Toy Story (1995)"
        assert names[29] == "City of Lost Children, The (Cité des enfants perdus, La) (1995)"


def test_item_names_small_files(tmp_path: Path) -> None:
    u_item = write(tmp_path, "u.item", "1|Caf\xe9 (1995)|01-Jan-1995||http://x|0\n".encode("latin-1"))
    assert read_item_names(u_item) == {1: "Café (1995)"}
    dat = write(tmp_path, "movies.dat", "1::Toy Story (1995)::Animation\n".encode("latin-1"))
    assert read_item_names(dat) == {1: "Toy Story (1995)"}
    movies = write(tmp_path, "movies.csv", 'movieId,title,genres\r\n007,"A, B (1990)",Drama\r\n')
    assert read_item_names(movies) == {"007": "A, B (1990)"}
    bad = write(tmp_path, "bad.csv", "movieId,name\n")
    with pytest.raises(DataError) as e:
        read_item_names(write(tmp_path, "x.csv", "a,b\n1,2\n"))
    assert_error(e, tmp_path / "x.csv", 1, "a,b")
    with pytest.raises(DataError, match="no item rows"):
        read_item_names(bad)
