"""trainer.benchmarks.assignment's parts on a few pages: the split both ways share, the
reference's ImageDataGenerator fit and the product's convert + train (model2, 1 epoch)."""
from trainer.benchmarks import assignment


def test_split_labels_spreads_pages_and_puts_every_fifth_in_val(sample_dir, tmp_path):
    files = assignment.split_labels(str(sample_dir / "labels.txt"), str(tmp_path), pages=40)
    lines = {split: open(txt).read().splitlines() for split, (txt, _) in files.items()}
    assert (len(lines["train"]), len(lines["val"])) == (32, 8)
    assert not set(lines["train"]) & set(lines["val"])
    assert len({line.split()[1] for line in lines["train"]}) == 16  # every class
    csv = open(files["val"][1]).read().splitlines()
    assert csv[0] == "path,label" and csv[1] == lines["val"][0].replace(" ", ",")


def test_both_ways_train_the_same_pages(sample_dir, tmp_path):
    files = assignment.split_labels(str(sample_dir / "labels.txt"), str(tmp_path), pages=20)
    images = str(sample_dir / "images")
    reference = assignment.reference_way({"model2": 1}, files, images, 128, 8, seed=0)
    product, convert_s, data_dir = assignment.product_way({"model2": 1}, files, images, 128, 8,
                                                          seed=0, workers=0,
                                                          work=str(tmp_path))
    assert reference["model2"] > 0 and product["model2"] > 0 and convert_s > 0
    from trainer import data
    assert data.read_manifest(data_dir, "train")["num_records"] == 16
    assert data.read_manifest(data_dir, "val")["num_records"] == 4
    assert (tmp_path / "assignment-runs" / "model2" / "final.keras").exists()
