"""Post-training quantization of the real-valued layers (paper section 7.5, Eq. 5/6, Table 7).

    quantize(model, spec="8/8-4/8-4/8-8/8", *, inplace=False) -> model   (model.quant_spec = spec)
    calibrate(model, batches) -> n_batches        activation ranges (default range mode)
    finetune(model, train_batches, test_batches, *, epochs=5, lr=1e-7, device="cpu") -> history
    parse_spec("I-S-E-O[-D][;options]") -> QuantSpec;  TABLE7_SPECS;  PAPER_SPEC
    save(model, path) / load(path)                 checkpoints that rebuild the quantized model

CLI: ``python -m bnext.quant --checkpoint CKPT --spec SPEC [--finetune-epochs N] [-o out.pt]``,
``python -m bnext.quant table --checkpoint CKPT`` (Table 7) and ``python -m bnext.quant size`` (Table 2 †).
"""

from .._lazy import lazy_exports

# imported on first use (``python -m bnext.quant --help`` stays free of torch)
__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    ".apply": ["calibrate", "find_groups", "group_counts", "load", "quantize", "quantized_layers",
               "rebuild_from_checkpoint", "save"],
    ".layers": ["QUANT_LAYERS", "QuantConv2d", "QuantLinear"],
    ".quantizers": ["ActQuantizer", "WeightQuantizer", "abs_mean_norm", "dequantize", "eq5_codes", "eq6_codes",
                    "fake_quantize", "fake_quantize_weight"],
    ".report": ["DAGGER_SPECS", "PAPER_DAGGER", "PAPER_TABLE7", "dagger_row", "format_dagger", "format_table7",
                "table7"],
    ".spec": ["GROUPS", "PAPER_SPEC", "TABLE7_SPECS", "Bits", "QuantSpec", "parse_spec", "with_options"],
    ".tune": ["FINETUNE_BETAS", "FINETUNE_EPOCHS", "FINETUNE_LR", "finetune", "freeze_binary_layers", "make_optimizer"],
})
