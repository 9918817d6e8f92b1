"""Response models and the /predict request documentation of the OpenAPI schema."""
from __future__ import annotations

from pydantic import BaseModel, Field


class Prediction(BaseModel):
    label: str = Field(description="the most probable class")
    confidence: float = Field(description="its probability")
    probabilities: dict[str, float] = Field(description="probability of every class")


class PredictResponse(BaseModel):
    classes: list[str] = Field(description="class names, in the order of the model's probability columns")
    predictions: list[Prediction] = Field(description="one per item, in request order")


# /predict reads its body itself (JSON for text runs, multipart for image runs), with limits
# checked while reading; this documents both forms.
PREDICT_OPENAPI = {
    "requestBody": {
        "required": True,
        "description": "Text runs: JSON `{\"texts\": [...]}`. Image runs: multipart/form-data with one or more "
                       "files in the field `files`. Limits: see /metadata `settings`.",
        "content": {
            "application/json": {"schema": {
                "type": "object", "required": ["texts"], "additionalProperties": False,
                "properties": {"texts": {"type": "array", "items": {"type": "string"}, "minItems": 1}},
                "example": {"texts": ["WIN A FREE CRUISE!!!", "Minutes of Tuesday's meeting attached"]}}},
            "multipart/form-data": {"schema": {
                "type": "object", "required": ["files"],
                "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"}}}}},
        },
    },
    "responses": {
        "400": {"description": "malformed JSON (also: nested more than 32 levels) or multipart body"},
        "413": {"description": "body over the size limit"},
        "415": {"description": "wrong content type for this model"},
        "422": {"description": "empty batch, too many items, text too long, empty or not Unicode (a lone "
                               "surrogate), not an image, image too large, too many pixels in all"},
        "503": {"description": "not ready, or at capacity (queue full, an answer would come after the timeout, "
                               "timeout, too many connections): retry after Retry-After"},
    },
}
