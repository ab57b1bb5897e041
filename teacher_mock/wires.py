"""The black box in other APIs' wire formats: the same model, keys, quota and faults.

`TeacherSettings.wire` picks what the teacher speaks besides its listing and usage routes:
recmimic's own contract (`/v1/recommend*`, with `X-Model-Version` on every response); MLflow's
model server (`POST /invocations` with a `dataframe_split` of one `history` column and a `k`
parameter, answered `{"predictions": [...]}`, no model version), as
`teacher_mock/mlflow_model.py` makes MLflow itself serve it; or the open inference protocol of
KServe v2 and Triton (`POST /v2/models/{name}/infer`, BYTES tensors, the model version in the
body). Three more take the shapes of commercial recommendation APIs, each in a module of its
own with that API's own authentication (`teacher_mock.foreign_auth`): `recombee` and
`personalize` answer a user whose interactions were written first (`teacher_mock.sessions`),
`algolia` answers seed items. Each built-in API profile (`extractor.profiles`) is tested against
the wire it describes on a real port.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Path, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from teacher_mock import wire_algolia, wire_personalize, wire_recombee
from teacher_mock.errors import InvalidRequest
from teacher_mock.routing import MeteredKey, TeacherDep, json_answer, read_json
from teacher_mock.schemas import StrictBody
from teacher_mock.settings import Wire

MODEL_NAME = "recommender"  # the open inference model's name
_COMMERCIAL = {
    "recombee": wire_recombee.add_routes,
    "algolia": wire_algolia.add_routes,
    "personalize": wire_personalize.add_routes,
}


class MlflowFrame(StrictBody):
    """MLflow's `dataframe_split`: here one `history` column, a row per history."""

    columns: list[str]
    data: list[tuple[list[str]]] = Field(min_length=1)


class MlflowParams(StrictBody):
    k: int = Field(default=10, ge=1)


class MlflowRequest(StrictBody):
    dataframe_split: MlflowFrame
    params: MlflowParams = MlflowParams()


class Tensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any]


class InferParameters(BaseModel):
    k: int = Field(default=10, ge=1)


class InferRequest(BaseModel):
    id: str | None = None
    inputs: list[Tensor] = Field(min_length=1)
    parameters: InferParameters = InferParameters()


def add_wire_routes(app: FastAPI, wire: Wire) -> None:
    """The recommendation routes of `wire` other than recmimic's (`teacher_mock.app`)."""
    if wire in _COMMERCIAL:
        _COMMERCIAL[wire](app)
    elif wire == "mlflow":

        @app.post("/invocations")
        async def invocations(request: Request, teacher: TeacherDep, key: MeteredKey) -> Response:
            """MLflow's scoring route: one id list per row of the `history` input."""
            body = await read_json(request, MlflowRequest, teacher.settings.max_body_bytes)
            if body.dataframe_split.columns != ["history"]:
                raise InvalidRequest("dataframe_split: need exactly the column 'history'")
            histories = [row[0] for row in body.dataframe_split.data]
            answer = await teacher.recommend(key, histories, body.params.k, batch=True)
            predictions = [result.items for result in answer.results]
            return json_answer({"predictions": predictions}, answer.truncate)

    elif wire == "open-inference":

        @app.post("/v2/models/{name}/infer")
        async def infer(
            request: Request,
            teacher: TeacherDep,
            key: MeteredKey,
            name: Annotated[str, Path()],
        ) -> Response:
            """One history as the BYTES tensor `history` of shape [1, n]; the answer's ids as
            the BYTES tensor `items`."""
            if name != MODEL_NAME:
                raise InvalidRequest(f"no model {name!r}; this server has {MODEL_NAME!r}")
            body = await read_json(request, InferRequest, teacher.settings.max_body_bytes)
            tensor = next((t for t in body.inputs if t.name == "history"), None)
            if tensor is None or tensor.shape != [1, len(tensor.data)]:
                raise InvalidRequest("inputs: need a 'history' tensor of shape [1, n]")
            history = [str(item) for item in tensor.data]
            answer = await teacher.recommend(key, [history], body.parameters.k, batch=False)
            items = answer.results[0].items
            payload = {
                "model_name": MODEL_NAME,
                "model_version": teacher.version,
                "id": body.id or "",
                "outputs": [
                    {"name": "items", "shape": [1, len(items)], "datatype": "BYTES", "data": items}
                ],
            }
            return json_answer(payload, answer.truncate)
