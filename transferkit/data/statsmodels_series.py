"""Real series that ship inside statsmodels (``statsmodels.datasets``), read offline by name.

Each data set gives one or more named univariate series with its seasonal period:

==================== ======== ======================================================= ======
data set             sampling series                                                 season
==================== ======== ======================================================= ======
co2                  monthly  Mauna Loa CO2 (weekly readings averaged per month)        12
macrodata            quarterly US macro series 1959-2009 (realgdp, cpi, unemp, ...)     4
danish_data          quarterly Danish money demand (lrm, lry, lpy, ibo, ide)            4
elnino               monthly  sea surface temperature 1950-2010                        12
elec_equip           monthly  euro-area electrical equipment orders index             12
sunspots             yearly   sunspot activity 1700-2008                               1
nile                 yearly   Nile flow at Aswan 1871-1970                             1
interest_inflation   quarterly German inflation (Dp) and interest rate (R)              4
==================== ======== ======================================================= ======

Layer 1: numpy; statsmodels and pandas imported when a series is read.
"""
from __future__ import annotations

import numpy as np

from ..errors import MissingDependencyError, UserInputError

SEASONS = {"co2": 12, "macrodata": 4, "danish_data": 4, "elnino": 12, "elec_equip": 12, "sunspots": 1,
           "nile": 1, "interest_inflation": 4}


def _frame(name: str):
    try:
        import importlib

        module = importlib.import_module(f"statsmodels.datasets.{name}")
    except ImportError:
        raise MissingDependencyError(f"the statsmodels series {name!r}", "'transferkit[timeseries]'") from None
    return module.load_pandas().data if hasattr(module, "load_pandas") else module.load().data


def bundled_series(name: str) -> dict[str, np.ndarray]:
    """``{"<data set>/<column>": values (T,) float64}`` of one data set, oldest first, no NaNs."""
    if name not in SEASONS:
        raise UserInputError(f"no bundled series {name!r}", hint=f"use one of {', '.join(SEASONS)}")
    d = _frame(name)
    if name == "co2":
        d = d.resample("MS").mean().interpolate()
    elif name == "elec_equip":  # its one column has an ECB series code for a name
        return {"elec_equip/orders": d.iloc[:, 0].to_numpy(dtype=np.float64)}
    elif name == "elnino":  # one row per year, a column per month
        return {"elnino/sst": d.drop(columns="YEAR").to_numpy(dtype=np.float64).ravel()}
    skip = {"year", "quarter", "YEAR"}
    out = {}
    for c in d.columns:
        if c in skip:
            continue
        v = d[c].to_numpy(dtype=np.float64)
        out[f"{name}/{c.lower()}"] = v[np.isfinite(v)]
    return out
