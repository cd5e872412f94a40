"""The Event records torch.utils.tensorboard writes, built with the
tensorboard package's own protobufs (its `compat.proto`, the same messages
the real writer serialises): torch/utils/tensorboard/summary.py `scalar`
(old style: simple_value, a float32), `text` (the text plugin's tensor of
one UTF-8 string under `<tag>/text_summary`) and `hparams` (the hparams
plugin's experiment, session start and session end summaries), wrapped by
writer.py's FileWriter.add_summary/add_event (wall_time, and `step` when
one is given). Imported only when a run writes event files."""

from __future__ import annotations

from typing import Any

from tensorboard.compat.proto.event_pb2 import Event, SourceMetadata
from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
from tensorboard.compat.proto.tensor_pb2 import TensorProto
from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2
from tensorboard.plugins.text.plugin_data_pb2 import TextPluginData

# tensorboard/plugins/hparams/metadata.py's names (its module imports more than it holds).
HPARAMS_PLUGIN, HPARAMS_VERSION = "hparams", 0
EXPERIMENT_TAG = "_hparams_/experiment"
SESSION_START_INFO_TAG = "_hparams_/session_start_info"
SESSION_END_INFO_TAG = "_hparams_/session_end_info"


def file_version(when: float, version: str, source: str) -> bytes:
    return Event(wall_time=when, file_version=version,
                 source_metadata=SourceMetadata(writer=source)).SerializeToString()


def event(summary: Any, step: int | None, when: float) -> bytes:
    made = Event(summary=summary, wall_time=when)
    if step is not None:
        made.step = int(step)
    return made.SerializeToString()


def scalar(tag: str, value: float) -> Any:
    return Summary(value=[Summary.Value(tag=tag, simple_value=float(value))])


def text(tag: str, body: str) -> Any:
    content = TextPluginData(version=0).SerializeToString()
    metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="text", content=content))
    tensor = TensorProto(dtype="DT_STRING", string_val=[body.encode("utf_8")],
                         tensor_shape=TensorShapeProto(dim=[TensorShapeProto.Dim(size=1)]))
    return Summary(value=[Summary.Value(tag=tag + "/text_summary", metadata=metadata, tensor=tensor)])


def hparams(params: dict[str, Any], metrics: tuple[str, ...]) -> list[Any]:
    """summary.hparams(params, metrics): [experiment, session start, session
    end]. Numbers (and booleans: bool is an int, and the number test comes
    first) are FLOAT64, strings STRING; None is left out."""
    infos, start = [], plugin_data_pb2.SessionStartInfo()
    for name, value in params.items():
        if value is None:
            continue
        if isinstance(value, (int, float)):
            start.hparams[name].number_value = value
            kind = "DATA_TYPE_FLOAT64"
        else:
            start.hparams[name].string_value = str(value)
            kind = "DATA_TYPE_STRING"
        infos.append(api_pb2.HParamInfo(name=name, type=api_pb2.DataType.Value(kind)))
    experiment = api_pb2.Experiment(hparam_infos=infos,
                                    metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=m))
                                                  for m in metrics])
    end = plugin_data_pb2.SessionEndInfo(status=api_pb2.Status.Value("STATUS_SUCCESS"))
    return [_plugin(EXPERIMENT_TAG, plugin_data_pb2.HParamsPluginData(experiment=experiment,
                                                                      version=HPARAMS_VERSION)),
            _plugin(SESSION_START_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_start_info=start,
                                                                              version=HPARAMS_VERSION)),
            _plugin(SESSION_END_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_end_info=end,
                                                                            version=HPARAMS_VERSION))]


def _plugin(tag: str, content: Any) -> Any:
    metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name=HPARAMS_PLUGIN,
                                                                      content=content.SerializeToString()))
    return Summary(value=[Summary.Value(tag=tag, metadata=metadata)])
