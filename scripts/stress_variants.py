"""Stress variants of the public datasets for `make bench-models`: Parquet files with id, text, label, split.

Built from ../shared/datasets (never part of the repository) into a work folder; every file holds *raw*
text (the benchmark normalises it the way ingestion does). ``split`` is train / validation / test:

- visible datasets keep their official split (imdb, stackoverflow); ag_news (test file only) is split
  stratified 80/20 with seed 0;
- merged variants get a fixed 60/40 train/test split by a salted hash of the id (20news-like
  proportions: ~11k train / 7.5k test);
- subsample variants draw their training rows (train + validation) from the training side and keep a
  large, fixed test set from the test side, so small-data results are not measured on 60 documents;
- validation is the project's rule applied to the training rows (``assign_splits(train_ids, 0, 10)``).

Labels are never invented: the merged task's classes are the sources' own labels plus imdb's real star
rating (1-4, 7-10) as 8 classes, plus the demo corpus's 6. The e-mail/forum noise (headers, quoted replies,
signatures) is drawn from class-independent pools with a per-document seeded RNG; quoted replies come from
*other random documents* of the same variant, so they add noise, not signal (``mail22`` is the stand-in
for the kept-back 20-class long-mail dataset of issue 12).

    .venv/bin/python scripts/stress_variants.py --datasets-dir ../shared/datasets --out build/stress
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
PER_CLASS = 850
TEST_SALT = "stress-test-v1:"


def bucket(doc_id: str, salt: str) -> int:
    return int.from_bytes(hashlib.sha256((salt + doc_id).encode()).digest()[:8], "big") % 100


def validation_of(ids: list[str]) -> np.ndarray:
    """The project's rule for carving validation from training rows (assign_splits(ids, 0, 10))."""
    from textclf.model.data import assign_splits

    return assign_splits(ids, 0, 10) == "validation"


def read(root: Path, name: str, columns: tuple[str, ...] = ("id", "text", "label", "split")) -> dict[str, np.ndarray]:
    files = sorted((root / name).glob("*.parquet"))
    cols = list(columns)
    table = pa.concat_tables([pq.read_table(f, columns=cols) for f in files])
    return {c: np.array(table.column(c).to_pylist(), dtype=object) for c in cols}


def visible(root: Path, name: str) -> dict[str, np.ndarray]:
    d = read(root, name)
    ids = np.array([f"{name.split('_')[0]}-{i}" for i in d["id"]], dtype=object)
    if name == "ag_news_7600":
        from sklearn.model_selection import train_test_split

        tr, te = train_test_split(np.arange(len(ids)), test_size=0.2, stratify=d["label"], random_state=0)
        split = np.empty(len(ids), dtype=object)
        split[tr], split[te] = "train", "test"
    else:
        split = d["split"].copy()
    return {"id": ids, "text": d["text"], "label": d["label"], "split": split}


def finish(d: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Carve validation out of the train rows with the project's id-hash rule."""
    split = d["split"].copy()
    train = np.flatnonzero(split == "train")
    split[train[validation_of(d["id"][train].tolist())]] = "validation"
    return {**d, "split": split}


def write(out: Path, name: str, d: dict[str, np.ndarray], meta: dict, index: dict) -> None:
    d = finish(d)
    table = pa.table({"id": pa.array(d["id"].tolist(), pa.string()), "text": pa.array(d["text"].tolist(), pa.string()),
                      "label": pa.array(d["label"].tolist(), pa.string()),
                      "split": pa.array(d["split"].tolist(), pa.string())})
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out / f"{name}.parquet", compression="zstd")
    counts = {s: int((d["split"] == s).sum()) for s in ("train", "validation", "test")}
    lengths = np.array([len(t) for t in d["text"]])
    index[name] = {**meta, "rows": counts, "classes": len(set(d["label"].tolist())),
                   "mean_chars": float(lengths.mean()), "median_chars": float(np.median(lengths))}
    print(f"{name:<16} classes={index[name]['classes']:>3} {counts} mean_chars={lengths.mean():.0f}", flush=True)


# ----------------------------------------------------------------------------------------------- sources
def demo_docs(n_per_class: int, seed: int = 0) -> dict[str, np.ndarray]:
    """The project's demo corpus (textclf.corpus), its 6 classes, label noise as the generator makes it."""
    from textclf.demo.corpus import CorpusSpec, generate_rows

    rows = [r for chunk in generate_rows(CorpusSpec(rows=n_per_class * 6 * 2, seed=seed)) for r in chunk]
    rng = np.random.default_rng(seed)
    keep: dict[str, list] = {}
    for i in rng.permutation(len(rows)):
        r = rows[i]
        lst = keep.setdefault(r["label"], [])
        if len(lst) < n_per_class:
            lst.append(r)
    picked = [r for lab in sorted(keep) for r in keep[lab]]
    return {"id": np.array([f"demo-{r['id']}" for r in picked], dtype=object),
            "text": np.array([r["text"] for r in picked], dtype=object),
            "label": np.array([f"demo:{r['label']}" for r in picked], dtype=object)}


def pool_all(root: Path) -> dict[str, dict[str, np.ndarray]]:
    """Every source as id/text/label, labels prefixed by source; imdb labelled by its star rating."""
    ag = read(root, "ag_news_7600")
    so = read(root, "stackoverflow_16k")
    imdb = read(root, "imdb_reviews", ("id", "text", "label", "split", "rating"))
    return {
        "ag": {"id": np.array([f"ag-{i}" for i in ag["id"]], dtype=object), "text": ag["text"],
               "label": np.array([f"ag:{x}" for x in ag["label"]], dtype=object)},
        "so": {"id": np.array([f"so-{i}" for i in so["id"]], dtype=object), "text": so["text"],
               "label": np.array([f"so:{x}" for x in so["label"]], dtype=object)},
        "imdb": {"id": np.array([f"imdb-{i}" for i in imdb["id"]], dtype=object), "text": imdb["text"],
                 "label": np.array([f"imdb:r{int(r):02d}" for r in imdb["rating"]], dtype=object)},
    }


def sample_per_class(d: dict[str, np.ndarray], n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    idx = []
    for lab in sorted(set(d["label"].tolist())):
        rows = np.flatnonzero(d["label"] == lab)
        idx.extend(rng.choice(rows, size=min(n, len(rows)), replace=False).tolist())
    idx = np.array(sorted(idx))
    return {k: v[idx] for k, v in d.items()}


def concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def merged(root: Path, per_class: int = PER_CLASS, seed: int = 0) -> dict[str, np.ndarray]:
    """ag 4 + stackoverflow 4 + imdb star ratings 8 + demo corpus 6 = 22 classes; 60/40 hash split."""
    rng = np.random.default_rng(seed)
    pools = pool_all(root)
    parts = [sample_per_class(pools[s], per_class, rng) for s in ("ag", "so", "imdb")]
    parts.append(demo_docs(per_class, seed))
    d = concat(parts)
    d["split"] = np.array(["test" if bucket(i, TEST_SALT) < 40 else "train" for i in d["id"]], dtype=object)
    return d


# ------------------------------------------------------------------------------------------- mail noise
FIRST = ("John", "Mary", "David", "Susan", "Michael", "Linda", "James", "Karen", "Robert", "Lisa", "Thomas", "Anne",
         "Peter", "Helen", "Mark", "Laura", "Paul", "Nancy", "Steven", "Carol", "Kevin", "Ruth", "Brian", "Ellen",
         "Gary", "Joyce", "Frank", "Diane", "Eric", "Janet", "Scott", "Maria", "Jeff", "Julie", "Chris", "Alice")
LAST = ("Smith", "Johnson", "Williams", "Brown", "Jones", "Miller", "Davis", "Wilson", "Anderson", "Taylor",
        "Moore", "Jackson", "Martin", "Lee", "Thompson", "White", "Harris", "Clark", "Lewis", "Walker", "Hall",
        "Young", "King", "Wright", "Scott", "Green", "Baker", "Adams", "Nelson", "Hill", "Campbell", "Mitchell")
DOMAINS = ("cs.cmu.edu", "andrew.cmu.edu", "mit.edu", "athena.mit.edu", "netcom.com", "uiuc.edu", "cs.uiuc.edu",
           "berkeley.edu", "ucsd.edu", "cs.utexas.edu", "ee.stanford.edu", "vnet.ibm.com", "hp.com", "sun.com",
           "dec.com", "cco.caltech.edu", "engin.umich.edu", "cis.ohio-state.edu", "uxa.cso.uiuc.edu", "nyx.cs.du.edu",
           "world.std.com", "access.digex.com", "ix.netcom.com", "rpi.edu", "cs.cornell.edu", "ecn.purdue.edu")
ORGS = ("Carnegie Mellon University", "Massachusetts Institute of Technology", "NETCOM On-line Communication Services",
        "University of Illinois at Urbana", "University of California, Berkeley", "IBM Corporation",
        "Hewlett-Packard Company", "Sun Microsystems, Inc.", "Digital Equipment Corporation",
        "California Institute of Technology", "University of Michigan Engineering", "The Ohio State University",
        "Purdue University Engineering Computer Network", "Rensselaer Polytechnic Institute", "Cornell Univ. CS Dept",
        "The World Public Access UNIX", "Express Access Online Communications", "University of Texas at Austin",
        "Stanford University", "University of Denver, Dept. of Math & Comp. Sci.")
HOSTS = ("po4.andrew", "bigboote", "zeus", "athena", "netcom5", "ux1", "sun4", "vax2", "hpcc01", "mentor", "crchh",
         "sol", "phoenix", "gumby", "orion", "bach", "kepler", "hermes", "apollo", "pluto", "galileo", "ariel")
READERS = ("Tin 1.1 PL4", "TIN [version 1.1 PL8]", "rn 4.3", "trn 2.0", "xrn 6.17", "nn 6.4.18",
           "ELM [version 2.4 PL20]",
           "Gnus v3.14", "NewsGrazer", "WinVN 0.80")
GROUPS = ("misc.misc", "news.misc", "alt.general", "comp.misc", "rec.misc", "soc.misc", "sci.misc", "talk.misc")
SIG_LINES = ("Disclaimer: the opinions expressed are my own, not my employer's.",
             "\"The views expressed here are not necessarily those of anyone else.\"",
             "Standard disclaimers apply.", "Any resemblance to real opinions is purely coincidental.",
             "Phone: +1 412 268 0000   Fax: +1 412 268 0001", "Reply to the address above, not the header.",
             "If you can read this, you are too close.", "Nothing I say is official.",
             "PGP key available on request.", "--- Sent from my terminal ---")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def _rng_for(doc_id: str, seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, int.from_bytes(hashlib.sha256(doc_id.encode()).digest()[:8], "big")])


def _person(rng: np.random.Generator) -> tuple[str, str, str, str]:
    first, last = FIRST[rng.integers(len(FIRST))], LAST[rng.integers(len(LAST))]
    domain = DOMAINS[rng.integers(len(DOMAINS))]
    login = rng.choice([f"{first[0].lower()}{last.lower()}", f"{first.lower()}.{last.lower()}",
                        f"{first.lower()}{int(rng.integers(1, 99))}", f"{last.lower()[:6]}"])
    return first, last, f"{login}@{domain}", ORGS[rng.integers(len(ORGS))]


def _msgid(rng: np.random.Generator) -> str:
    return f"<{int(rng.integers(1, 10**6))}.{int(rng.integers(10**3, 10**5))}@{DOMAINS[rng.integers(len(DOMAINS))]}>"


def mail(doc_id: str, text: str, others: list[str], seed: int = 0) -> str:
    """Wrap a document as a Usenet post: headers, attribution + quoted lines from other docs, signature."""
    rng = _rng_for(doc_id, seed)
    first, last, email, org = _person(rng)
    host = f"{HOSTS[rng.integers(len(HOSTS))]}.{DOMAINS[rng.integers(len(DOMAINS))]}"
    subject_src = others[0].split()
    subject = " ".join(subject_src[: int(rng.integers(3, 8))])
    body_lines = textwrap.wrap(text, 72) or [text]
    quoted: list[str] = []
    if rng.random() < 0.65:  # a reply: quote 1-2 other random documents
        qf, ql, qemail, _ = _person(rng)
        quoted.append(f"In article {_msgid(rng)}, {qemail} ({qf} {ql}) writes:")
        for src in others[: int(rng.integers(1, 3))]:
            lines = textwrap.wrap(src, 70)
            take = int(rng.integers(2, 12))
            start = int(rng.integers(0, max(1, len(lines) - take + 1)))
            quoted.extend("> " + ln for ln in lines[start:start + take])
            if rng.random() < 0.3:
                quoted.extend(">> " + ln for ln in textwrap.wrap(others[-1], 68)[:3])
        quoted.append("")
    sig = ["-- ", f"{first} {last}", email, org]
    if rng.random() < 0.7:
        sig.append(SIG_LINES[rng.integers(len(SIG_LINES))])
    lines_count = len(quoted) + len(body_lines) + len(sig) + 1
    date = (f"{DAYS[rng.integers(7)]}, {int(rng.integers(1, 29))} {MONTHS[rng.integers(12)]} 1993 "
            f"{int(rng.integers(0, 24)):02d}:{int(rng.integers(0, 60)):02d}:{int(rng.integers(0, 60)):02d} GMT")
    headers = [
        f"Path: {HOSTS[rng.integers(len(HOSTS))]}!{HOSTS[rng.integers(len(HOSTS))]}!"
        f"news.{DOMAINS[rng.integers(len(DOMAINS))]}!not-for-mail",
        f"From: {email} ({first} {last})",
        f"Newsgroups: {GROUPS[rng.integers(len(GROUPS))]}",
        f"Subject: {'Re: ' if quoted else ''}{subject}",
        f"Message-ID: {_msgid(rng)}",
        f"Date: {date}",
        f"Sender: news@{DOMAINS[rng.integers(len(DOMAINS))]}",
        f"Organization: {org}",
        f"Lines: {lines_count}",
        f"NNTP-Posting-Host: {host}",
    ]
    if quoted:
        headers.append(f"References: {_msgid(rng)} {_msgid(rng)}")
    if rng.random() < 0.5:
        headers.append(f"X-Newsreader: {READERS[rng.integers(len(READERS))]}")
    return "\n".join(headers + [""] + quoted + body_lines + [""] + sig) + "\n"


def with_mail(d: dict[str, np.ndarray], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed + 17)
    n = len(d["text"])
    texts = []
    for i in range(n):
        picks = rng.integers(0, n - 1, 3)
        picks = picks + (picks >= i)  # never the document itself
        texts.append(mail(d["id"][i], d["text"][i], [d["text"][j] for j in picks], seed))
    return {**d, "text": np.array(texts, dtype=object)}


# ----------------------------------------------------------------------------------------- subsamples
def subsample(d: dict[str, np.ndarray], n_train: int, n_test: int | None, seed: int) -> dict[str, np.ndarray]:
    """n_train rows (stratified) from the training side as train+validation; a fixed test set from the test side."""
    from sklearn.model_selection import train_test_split

    rng = np.random.default_rng(seed)
    is_train = d["split"] != "test"
    tr = np.flatnonzero(is_train)
    te = np.flatnonzero(~is_train)
    tr, _ = train_test_split(tr, train_size=n_train, stratify=d["label"][tr], random_state=seed)
    if n_test is not None and n_test < len(te):
        te, _ = train_test_split(te, train_size=n_test, stratify=d["label"][te], random_state=seed)
    idx = np.concatenate([np.sort(tr), np.sort(te)])
    out = {k: v[idx] for k, v in d.items()}
    out["split"] = np.array(["train"] * len(tr) + ["test"] * len(te), dtype=object)
    del rng
    return out


def imbalanced(d: dict[str, np.ndarray], ratio: float, seed: int) -> dict[str, np.ndarray]:
    """Geometric class sizes from the largest class down to largest/ratio, same shares in train and test."""
    rng = np.random.default_rng(seed)
    classes = sorted(set(d["label"].tolist()))
    order = rng.permutation(len(classes))
    keep = []
    for side in ("train", "test"):
        rows = np.flatnonzero((d["split"] == "test") == (side == "test"))
        sizes = {c: int((d["label"][rows] == c).sum()) for c in classes}
        top = min(sizes.values())
        for rank, ci in enumerate(order):
            c = classes[ci]
            share = ratio ** (-rank / (len(classes) - 1))
            cand = rows[d["label"][rows] == c]
            keep.extend(rng.choice(cand, size=max(2, int(round(top * share))), replace=False).tolist())
    idx = np.array(sorted(keep))
    return {k: v[idx] for k, v in d.items()}


def titles(root: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """AG News titles only (short, tweet-length texts), 4 classes."""
    ag = read(root, "ag_news_7600", ("id", "title", "label"))
    from sklearn.model_selection import train_test_split

    ids = np.array([f"agt-{i}" for i in ag["id"]], dtype=object)
    tr, te = train_test_split(np.arange(len(ids)), test_size=0.2, stratify=ag["label"], random_state=seed)
    split = np.empty(len(ids), dtype=object)
    split[tr], split[te] = "train", "test"
    return {"id": ids, "text": ag["title"], "label": ag["label"], "split": split}


VARIANTS = ("imdb", "so", "ag", "merged22", "mail22", "so_mail", "ag_300", "ag_1000", "so_1000", "mail22_1000",
            "titles_500", "so_imb20", "mail22_imb20")


def build(datasets: Path, out: Path) -> dict:
    """Write every variant under ``out`` (and INDEX.json describing them); returns the index."""
    index: dict = {}
    imdb, so = visible(datasets, "imdb_reviews"), visible(datasets, "stackoverflow_16k")
    ag = visible(datasets, "ag_news_7600")
    write(out, "imdb", imdb, {"kind": "visible", "split": "official 25k/25k"}, index)
    write(out, "so", so, {"kind": "visible", "split": "official 8k/8k"}, index)
    write(out, "ag", ag, {"kind": "visible", "split": "stratified 80/20 seed 0"}, index)
    m = merged(datasets)
    write(out, "merged22", m, {"kind": "a: many-class merge", "split": "hash 60/40"}, index)
    mm = with_mail(m)
    write(out, "mail22", mm, {"kind": "a+b: merge + mail/forum noise (20news stand-in)", "split": "hash 60/40"},
          index)
    write(out, "so_mail", with_mail(so), {"kind": "b: stackoverflow + mail noise", "split": "official 8k/8k"},
          index)
    write(out, "ag_300", subsample(ag, 300, None, 0), {"kind": "c: 300 training docs"}, index)
    write(out, "ag_1000", subsample(ag, 1000, None, 0), {"kind": "c: 1000 training docs"}, index)
    write(out, "so_1000", subsample(so, 1000, 3000, 0), {"kind": "c: 1000 training docs (long)"}, index)
    write(out, "mail22_1000", subsample(mm, 1000, 3000, 0), {"kind": "b+c: 1000 docs, 22 classes, mail noise"},
          index)
    write(out, "titles_500", subsample(titles(datasets), 500, 1520, 0),
          {"kind": "c: 500 short texts (ag titles, tweet-length)"}, index)
    write(out, "so_imb20", imbalanced(so, 20.0, 0), {"kind": "d: 1:20 imbalance, 4 classes"}, index)
    write(out, "mail22_imb20", imbalanced(mm, 20.0, 0), {"kind": "b+d: 1:20 imbalance, 22 classes, mail noise"},
          index)
    (out / "INDEX.json").write_text(json.dumps(index, indent=2))
    return index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets-dir", type=Path, default=DATASETS)
    parser.add_argument("--out", type=Path, default=Path("build/stress"))
    args = parser.parse_args(argv)
    build(args.datasets_dir, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
