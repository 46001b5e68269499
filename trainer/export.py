"""Exports a trained model as a SavedModel that stock TensorFlow Serving loads.

    python -m trainer.export --model_dir=RUN [--export_dir=RUN/export/1] [--tiff_in_graph]

The signatures and what clients send: trainer/serving.py.
"""
from tfrecords_tool import cli
from trainer import serving


def main(argv):
    cli.no_arguments(argv)
    config = cli.from_flags(serving.ExportConfig)
    export_dir = serving.export(config)
    formats = ("TIFF (tensorflow-io), PNG, JPEG, BMP or GIF" if config.tiff_in_graph
               else "PNG, JPEG, BMP or GIF")
    print(f"exported {config.model_path} to {export_dir}\n"
          f"  serving_default: image_bytes ({formats} file bytes) -> probabilities, class_id, "
          f"class_name\n"
          f"  pixels: pixels (uint8 [H, W], [H, W, 1|3] or [N, H, W, C]) -> the same")
    if config.tiff_in_graph:
        print("  needs tensorflow-io's op library on the server (IO>DecodeTiff): stock TF Serving "
              "cannot load this export")
    else:
        print("  core TensorFlow ops only: stock TF Serving loads it")


if __name__ == "__main__":
    cli.define_flags(serving.ExportConfig)
    cli.run(main)
