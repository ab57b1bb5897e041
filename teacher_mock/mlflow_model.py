"""A recmimic artifact packaged for MLflow's own model server (`mlflow models serve`).

So the extractor can be tried against a serving stack nobody here wrote: MLflow serves the
model under its own scoring protocol (`POST /invocations`, the built-in `mlflow` API profile),
with its own request parsing and errors. The model is "from code" (this file), not pickled:
`save_mlflow_model` copies the artifact beside it and declares the signature: a `history`
column of string lists in, a `k` parameter, one id list per row out. Needs the optional
`mlflow` extra (`mlflow-skinny`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
from mlflow.models import ModelSignature, set_model
from mlflow.pyfunc import PythonModel
from mlflow.types.schema import Array, ColSpec, ParamSchema, ParamSpec, Schema

ARTIFACT_KEY = "recmimic_artifact"


class RecmimicModel(PythonModel):
    """The artifact's top-k unseen items for each history, in raw ids."""

    def load_context(self, context: Any) -> None:
        from seqrec.artifacts import load_artifact
        from seqrec.serving.catalogue import Catalogue

        artifact = load_artifact(Path(context.artifacts[ARTIFACT_KEY]))
        self.model = artifact.model.eval()
        self.catalogue = Catalogue(artifact.info.item_ids)

    # `model_input` (a pandas DataFrame) has no type hint on purpose: MLflow reads the hint to
    # infer a schema, and the signature `save_mlflow_model` declares is the one that holds.
    def predict(self, context: Any, model_input, params: dict[str, Any] | None = None) -> Any:  # noqa: ANN001
        from seqrec.serving.batcher import rank_histories

        k = int((params or {}).get("k", 10))
        histories = [list(map(str, history)) for history in model_input["history"]]
        dense = [self.catalogue.to_dense(history) for history in histories]
        rankings = rank_histories(self.model, dense, min(k, len(self.catalogue)))
        return [self.catalogue.to_raw(ranking.items) for ranking in rankings]


def save_mlflow_model(artifact_dir: Path, out: Path) -> Path:
    """An MLflow model directory serving `artifact_dir` (copied into it)."""
    signature = ModelSignature(
        inputs=Schema([ColSpec(Array("string"), "history")]),
        params=ParamSchema([ParamSpec("k", "long", 10)]),
    )
    import pandas as pd

    from seqrec.artifacts import load_artifact

    first = load_artifact(artifact_dir).info.item_ids[0]
    mlflow.pyfunc.save_model(
        path=str(out),
        python_model=__file__,
        artifacts={ARTIFACT_KEY: str(artifact_dir)},
        signature=signature,
        input_example=(pd.DataFrame({"history": [[first]]}), {"k": 1}),
    )
    return out


set_model(RecmimicModel())
