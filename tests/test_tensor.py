"""lucid.Tensor, dtypes and the creation functions."""
import numpy as np
import pytest

import lucid


def test_python_data_defaults(backend_name):
    assert lucid.Tensor(1.5).dtype == lucid.Float32
    assert lucid.Tensor([1, 2]).dtype == lucid.Int64
    assert lucid.Tensor([True]).dtype == lucid.Bool
    t = lucid.Tensor([[1, 2, 3], [4, 5, 6]], dtype=lucid.Int32)
    assert t.shape == (2, 3) and t.ndim == 2 and t.size == 6 and t.nbytes == 24 and len(t) == 2
    assert t.dtype == lucid.Int32 and t.device == "cpu"


def test_numpy_input_is_zero_copy_and_keeps_dtype():
    a = np.arange(4, dtype=np.float16)
    t = lucid.Tensor(a)
    assert t.array is a and t.dtype == lucid.Float16
    assert np.shares_memory(np.asarray(t), a)


def test_dlpack_round_trip():
    a = np.arange(6, dtype=np.int16).reshape(2, 3)
    t = lucid.Tensor(a)
    back = np.from_dlpack(t)
    np.testing.assert_array_equal(back, a)
    assert lucid.Tensor(back).dtype == lucid.Int16


def test_arithmetic_comparison_matmul_and_reductions(backend_name):
    a = lucid.Tensor([[1.0, 2.0], [3.0, 4.0]])
    assert (a + 1).tolist() == [[2, 3], [4, 5]] and (2 * a).tolist() == [[2, 4], [6, 8]]
    assert (1 - a).tolist() == [[0, -1], [-2, -3]] and (a / 2).tolist() == [[0.5, 1], [1.5, 2]]
    assert (a @ a).tolist() == [[7, 10], [15, 22]] and (-a).tolist()[0] == [-1, -2]
    assert (a > 2).tolist() == [[False, False], [True, True]]
    assert a.sum().item() == 10 and a.mean(axis=0).tolist() == [2, 3]
    assert a.max().item() == 4 and a.min(axis=1).tolist() == [1, 3]
    assert a.mT.tolist() == [[1, 3], [2, 4]] and a.transpose(1, 0).tolist() == [[1, 3], [2, 4]]
    assert a.reshape(4).tolist() == [1, 2, 3, 4] and a.reshape((1, 4)).shape == (1, 4)


def test_indexing_and_slice_assignment(backend_name):
    t = lucid.zeros(3, 4)
    t[1, ...] = lucid.ones(4)
    t[:, 0:1] = 5.0
    assert t[1, ...].tolist() == [5, 1, 1, 1] and t.tolist()[0] == [5, 0, 0, 0]


def test_creation_functions(backend_name):
    assert lucid.zeros(2, 3).shape == (2, 3) and lucid.ones((2,)).tolist() == [1, 1]
    assert lucid.empty(2, dtype=lucid.Int8).dtype == lucid.Int8
    assert lucid.full((2,), 3.5).tolist() == [3.5, 3.5]
    assert lucid.arange(1, 7, 2).tolist() == [1, 3, 5]
    assert lucid.zeros_like(lucid.ones(2, dtype=lucid.Int16)).dtype == lucid.Int16
    assert lucid.concatenate([lucid.ones(2), lucid.zeros(1)]).tolist() == [1, 1, 0]
    assert lucid.stack([lucid.ones(2), lucid.zeros(2)], axis=1).shape == (2, 2)
    assert lucid.where(lucid.Tensor([True, False]), lucid.ones(2), lucid.zeros(2)).tolist() == [1, 0]
    assert lucid.max(lucid.Tensor([1, 9, 2])).item() == 9 and lucid.min([4, 2]).item() == 2
    assert lucid.randn((2, 3)).shape == (2, 3) and lucid.rand(4).dtype == lucid.Float32


def test_manual_seed_reproducible_across_backends():
    lucid.manual_seed(3)
    a = lucid.randn(5).numpy()
    with lucid.use_backend("array_api_strict"):
        lucid.manual_seed(3)
        b = lucid.randn(5).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, lucid.randn(5).numpy())


def test_dtypes_compare_and_print():
    assert lucid.Float32 == lucid.Float32 and lucid.Float32 != lucid.Float64
    assert str(lucid.Int8) == "Int8" and repr(lucid.UInt8) == "UInt8"
    assert "dtype=Float32" in repr(lucid.zeros(1))


@pytest.mark.parametrize(
    "make, error",
    [
        (lambda: lucid.Tensor([[1, 2], [3]]), ValueError),
        (lambda: lucid.Tensor(["a"]), TypeError),
        (lambda: lucid.Tensor([1], dtype="complex128"), TypeError),
        (lambda: lucid.zeros(2, dtype=int), TypeError),
        (lambda: lucid.zeros(-1), ValueError),
        (lambda: lucid.Tensor([1.0, 2.0]).item(), ValueError),
        (lambda: lucid.Tensor([1.0]).to("tpu"), ValueError),
    ],
)
def test_bad_input_raises_clear_errors(make, error):
    with pytest.raises(error):
        make()


def test_mixing_backends_in_one_operation_is_an_error():
    a = lucid.ones(2)
    with lucid.use_backend("array_api_strict"):
        b = lucid.ones(2)
    with pytest.raises(ValueError, match="move one with .to"):
        a + b


def test_to_and_astype():
    t = lucid.Tensor([1, 2])
    moved = t.to("cpu")
    assert moved.array is t.array and moved.tolist() == [1, 2]  # already there: no copy
    converted = t.astype(lucid.Float64)
    assert converted.dtype == lucid.Float64 and converted.tolist() == [1.0, 2.0]


def test_public_surface_for_library_code(backend_name):
    t = lucid.ones(2, 3)
    assert t.backend is lucid.get_backend() and t.array.shape == (2, 3)
    wrapped = lucid.Tensor.wrap(t.array, t.backend)
    assert wrapped.array is t.array
    other = t.with_array(t.backend.xp.zeros((4,)))
    assert other.backend is t.backend and other.tolist() == [0.0] * 4
    assert t.as_operand(2.5) == 2.5 and t.as_operand(lucid.zeros(3)).shape == (3,)


def test_bfloat16_tensors_on_numpy():
    t = lucid.Tensor([1.5, -2.0], dtype=lucid.BFloat16)
    assert t.dtype == lucid.BFloat16 and t.nbytes == 4 and t.astype(lucid.Float32).tolist() == [1.5, -2.0]
