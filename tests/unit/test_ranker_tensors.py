import numpy as np
import pytest

from rankserve.ranker.tensors import TensorFormatError, from_tensor_proto, to_tensor_proto
from rankserve.tfserving.v1 import tensor_pb2


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int64, np.float16])
def test_round_trip(dtype):
    arr = (np.arange(12).reshape(3, 4) * 1.5).astype(dtype)
    proto = tensor_pb2.TensorProto.FromString(to_tensor_proto(arr).SerializeToString())
    back = from_tensor_proto(proto)
    assert back.dtype == arr.dtype and back.shape == (3, 4)
    np.testing.assert_array_equal(back, arr)


def test_request_tensors_use_little_endian_content():
    arr = np.array([[1.0, -2.5]], np.float32)
    proto = to_tensor_proto(arr)
    assert proto.dtype == tensor_pb2.DT_FLOAT
    assert [d.size for d in proto.tensor_shape.dim] == [1, 2]
    assert proto.tensor_content == arr.astype("<f4").tobytes()
    assert from_tensor_proto(to_tensor_proto(arr.astype(">f4"))).tolist() == [[1.0, -2.5]]


def test_float_val_is_read_and_a_single_value_fills():
    p = tensor_pb2.TensorProto(dtype=tensor_pb2.DT_FLOAT, float_val=[1, 2, 3])
    p.tensor_shape.dim.add(size=3)
    assert from_tensor_proto(p).tolist() == [1, 2, 3]
    p = tensor_pb2.TensorProto(dtype=tensor_pb2.DT_FLOAT, float_val=[7])
    p.tensor_shape.dim.add(size=4)
    assert from_tensor_proto(p).tolist() == [7, 7, 7, 7]


def test_half_val_holds_bits():
    vals = np.array([1.5, -2], np.float16)
    p = tensor_pb2.TensorProto(dtype=tensor_pb2.DT_HALF, half_val=vals.view(np.uint16).tolist())
    p.tensor_shape.dim.add(size=2)
    assert from_tensor_proto(p).tolist() == [1.5, -2]


def test_bad_tensors_are_rejected():
    p = tensor_pb2.TensorProto(dtype=tensor_pb2.DT_FLOAT, tensor_content=b"\0" * 8)
    p.tensor_shape.dim.add(size=3)
    with pytest.raises(TensorFormatError, match="8 bytes"):
        from_tensor_proto(p)
    with pytest.raises(TensorFormatError, match="DT_INVALID"):
        from_tensor_proto(tensor_pb2.TensorProto(dtype=tensor_pb2.DT_INVALID))


def test_strings_and_bools_round_trip():
    words = np.array([b"red", "shoe", b""], dtype=object)
    assert from_tensor_proto(to_tensor_proto(words)).tolist() == [b"red", b"shoe", b""]
    flags = np.array([[True, False, True]])
    back = from_tensor_proto(to_tensor_proto(flags))
    assert back.dtype == np.bool_ and back.tolist() == [[True, False, True]]


def test_declared_sizes_are_bounded_before_any_allocation():
    repeated = tensor_pb2.TensorProto(dtype=tensor_pb2.DT_FLOAT, float_val=[1.0])
    repeated.tensor_shape.dim.add(size=2**40)
    with pytest.raises(TensorFormatError, match="4398046511104 bytes decoded"):
        from_tensor_proto(repeated)
    overflow = tensor_pb2.TensorProto(dtype=tensor_pb2.DT_FLOAT, float_val=[1.0])
    for _ in range(3):
        overflow.tensor_shape.dim.add(size=2**32)  # the product wraps to 0 in int64
    with pytest.raises(TensorFormatError, match="at most 1000 are accepted"):
        from_tensor_proto(overflow, max_bytes=1000)
    negative = tensor_pb2.TensorProto(dtype=tensor_pb2.DT_FLOAT, float_val=[1.0])
    negative.tensor_shape.dim.add(size=-4)
    with pytest.raises(TensorFormatError, match="negative dimension"):
        from_tensor_proto(negative)
