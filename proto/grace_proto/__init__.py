"""The wire contract of the GRACE coreset service: JSON models and the binary frame format."""

from grace_proto.frames import Frame, FrameError, decode_frame, encode_frame

__all__ = ["Frame", "FrameError", "decode_frame", "encode_frame"]
