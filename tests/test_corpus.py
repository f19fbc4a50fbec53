"""A corpus of everyday numpy, pandas, scipy and scikit-learn: each public function or class, imported
by name into the notebook, is a global of a notebook-style function and a free name of a ``%%task_queue``
cell; both run on a real server to COMPLETE with the same result as the plain call in the kernel.

Before jupyter_taskq.pickling, about a third of these (scikit-learn's validated functions, scipy.stats'
wrapped tests) could not even be submitted: RecursionError in dill's global capture.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from jupyter_taskq.notebook.cell import run_cell
from jupyter_taskq.notebook.magic import capture

# (library, "from MODULE import NAME", expression using NAME and the notebook's X, y, df)
CORPUS = [
    ("numpy", "numpy", "cumsum", "cumsum(X[:, 0])"),
    ("numpy", "numpy", "linspace", "linspace(0, 1, 7)"),
    ("numpy", "numpy", "polyfit", "polyfit(X[:, 0], X[:, 1], 2)"),
    ("numpy", "numpy", "histogram", "histogram(X[:, 2], bins=5)"),
    ("numpy", "numpy", "einsum", "einsum('ij,ij->i', X, X)"),
    ("numpy", "numpy", "unique", "unique(y, return_counts=True)"),
    ("numpy", "numpy", "percentile", "percentile(X, [10, 50, 90], axis=0)"),
    ("numpy", "numpy", "convolve", "convolve(X[:, 0], [0.25, 0.5, 0.25], mode='same')"),
    ("numpy", "numpy.linalg", "svd", "svd(X[:20], compute_uv=False)"),
    ("numpy", "numpy.linalg", "norm", "norm(X, axis=1)"),
    ("numpy", "numpy.fft", "rfft", "rfft(X[:, 1])"),
    ("numpy", "numpy.random", "default_rng", "default_rng(7).normal(size=5)"),
    ("pandas", "pandas", "concat", "concat([df, df], ignore_index=True)"),
    ("pandas", "pandas", "merge", "merge(df, df[['a', 'label']].head(10), on='label', how='left').shape"),
    ("pandas", "pandas", "pivot_table", "pivot_table(df, values='a', index='label', aggfunc='mean')"),
    ("pandas", "pandas", "DataFrame", "DataFrame(X[:5], columns=list('abcde')).describe()"),
    ("pandas", "pandas", "Series", "Series(y).value_counts().sort_index()"),
    ("pandas", "pandas", "date_range", "date_range('2024-01-01', periods=6, freq='W')"),
    ("pandas", "pandas", "cut", "cut(df['a'], 4, labels=False)"),
    ("pandas", "pandas", "get_dummies", "get_dummies(df['label'].astype(str), prefix='k')"),
    ("pandas", "pandas", "crosstab", "crosstab(df['label'], df['a'] > 0)"),
    ("pandas", "pandas", "melt", "melt(df.head(4), id_vars=['label'], value_vars=['a', 'b'])"),
    ("pandas", "pandas", "to_datetime", "to_datetime(['2024-03-01', '2025-12-31']).year"),
    ("scipy", "scipy.stats", "ttest_ind", "tuple(ttest_ind(X[:, 0], X[:, 1]))"),
    ("scipy", "scipy.stats", "pearsonr", "tuple(pearsonr(X[:, 0], X[:, 1]))"),
    ("scipy", "scipy.stats", "zscore", "zscore(X, axis=0)"),
    ("scipy", "scipy.stats", "linregress", "tuple(linregress(X[:, 0], X[:, 2]))"),
    ("scipy", "scipy.optimize", "minimize", "minimize(lambda v: ((v - 3) ** 2).sum(), np.zeros(2)).x.round(4)"),
    ("scipy", "scipy.integrate", "quad", "quad(np.sin, 0, np.pi)"),
    ("scipy", "scipy.interpolate", "interp1d", "interp1d(np.arange(5), np.arange(5) ** 2)(2.5)"),
    ("scipy", "scipy.linalg", "expm", "expm(np.eye(3) * 0.5)"),
    ("scipy", "scipy.signal", "savgol_filter", "savgol_filter(X[:, 0], 7, 2)"),
    ("scipy", "scipy.spatial.distance", "cdist", "cdist(X[:4], X[4:8])"),
    ("scipy", "scipy.special", "expit", "expit(X[:, 0])"),
    ("scipy", "scipy.sparse", "csr_matrix", "csr_matrix(np.eye(4)).sum(axis=0)"),
    ("sklearn", "sklearn.model_selection", "cross_val_score", "cross_val_score(SVC(), X, y, cv=3)"),
    ("sklearn", "sklearn.model_selection", "cross_validate", "cross_validate(SVC(), X, y, cv=3)['test_score']"),
    ("sklearn", "sklearn.model_selection", "train_test_split", "train_test_split(X, y, random_state=0)[3]"),
    ("sklearn", "sklearn.model_selection", "KFold", "[t.tolist() for t, _ in KFold(3).split(X)][0][:5]"),
    ("sklearn", "sklearn.model_selection", "GridSearchCV",
     "GridSearchCV(SVC(), {'C': [0.1, 1.0]}, cv=3).fit(X, y).best_params_"),
    ("sklearn", "sklearn.datasets", "make_classification", "make_classification(n_samples=20, random_state=3)[0]"),
    ("sklearn", "sklearn.datasets", "load_iris", "load_iris(return_X_y=True)[0].mean(axis=0)"),
    ("sklearn", "sklearn.preprocessing", "StandardScaler", "StandardScaler().fit_transform(X)"),
    ("sklearn", "sklearn.linear_model", "LogisticRegression", "LogisticRegression().fit(X, y).coef_"),
    ("sklearn", "sklearn.ensemble", "RandomForestClassifier",
     "RandomForestClassifier(n_estimators=10, random_state=0).fit(X, y).predict(X[:10])"),
    ("sklearn", "sklearn.cluster", "KMeans", "KMeans(3, n_init=2, random_state=0).fit(X).inertia_"),
    ("sklearn", "sklearn.decomposition", "PCA", "PCA(2).fit(X).explained_variance_ratio_"),
    ("sklearn", "sklearn.pipeline", "make_pipeline",
     "make_pipeline(StandardScaler(), SVC()).fit(X, y).score(X, y)"),
    ("sklearn", "sklearn.metrics", "f1_score", "f1_score(y, SVC().fit(X, y).predict(X))"),
]

NOTEBOOK_SETUP = """
import numpy as np
import pandas as pd
from sklearn.datasets import make_classification
from sklearn.svm import SVC
from sklearn.preprocessing import StandardScaler
X, y = make_classification(n_samples=90, n_features=5, random_state=0)
df = pd.DataFrame(X, columns=list('abcde')).assign(label=y)
"""


def notebook() -> dict:
    """A notebook namespace (``__name__ == "__main__"``): the setup cell, then one import and one
    function per corpus entry, ``use_<i>``, that uses the imported name as a global."""
    ns = {"__name__": "__main__"}
    exec(compile(NOTEBOOK_SETUP, "<setup cell>", "exec"), ns)  # noqa: S102 - a notebook's own cells
    for i, (_, module, name, expr) in enumerate(CORPUS):
        cell = f"from {module} import {name}\n\ndef use_{i}():\n    return {expr}\n"
        exec(compile(cell, f"<corpus cell {i}>", "exec"), ns)  # noqa: S102
    return ns


def same(a, b) -> bool:
    """Equal and of the same kind (an array stays an array, a DataFrame a DataFrame)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
    if isinstance(a, (pd.DataFrame, pd.Series, pd.Index)):
        return a.equals(b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, z) for x, z in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if hasattr(a, "toarray"):  # scipy.sparse
        return same(a.toarray(), b.toarray())
    return bool(a == b) or (a != a and b != b)


def test_corpus_is_big_enough():
    for library in ("numpy", "pandas", "scipy", "sklearn"):
        assert sum(entry[0] == library for entry in CORPUS) >= 10
    assert len({(m, n) for _, m, n, _ in CORPUS}) == len(CORPUS) >= 40


@pytest.mark.timeout(300)
def test_corpus_functions_and_cells_run_as_in_the_kernel(shared_server):
    ns = notebook()
    client = shared_server.client()
    # one %%task_queue cell per library, each line using one corpus name as a free variable
    cells = {}
    for library in ("numpy", "pandas", "scipy", "sklearn"):
        lines = [f"r_{i} = {expr}" for i, (lib, _, _, expr) in enumerate(CORPUS) if lib == library]
        cell = "\n".join(lines) + "\n"
        namespace, assigned = capture(cell, ns)
        cells[library] = client.submit(run_cell, (cell, namespace, assigned), name=f"corpus-cell-{library}")
    handles = [client.submit(ns[f"use_{i}"], name=f"corpus-{CORPUS[i][2]}") for i in range(len(CORPUS))]

    plain = [ns[f"use_{i}"]() for i in range(len(CORPUS))]
    infos = client.wait([h.id for h in handles] + [h.id for h in cells.values()], timeout=240)
    failed = {i["name"]: (i["status"], (i.get("error") or {}).get("message")) for i in infos if i["status"] != "COMPLETE"}
    assert not failed
    wrong = [CORPUS[i][2] for i, h in enumerate(handles) if not same(h.result(timeout=30), plain[i])]
    assert not wrong, f"queued result differs from the plain call for {wrong}"
    for library, handle in cells.items():
        values = handle.result(timeout=30)
        wrong = [CORPUS[i][2] for i, entry in enumerate(CORPUS) if entry[0] == library
                 and not same(values[f"r_{i}"], plain[i])]
        assert not wrong, f"the {library} cell's values differ from the plain calls for {wrong}"
