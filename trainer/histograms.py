"""TensorBoard histogram summaries counted in one pass over the data.

`tf.summary.histogram` (TensorBoard 2.16) counts its 30 buckets with a float64 one-hot matrix of
values x buckets: for one 3x3x512x512 VGG16 kernel that is 72 M doubles, 0.26 s on 2 CPU cores,
and at every histogram epoch the weight and gradient histograms of VGG16 cost 2.3 s (model3 at
48 px: a quarter of an epoch's wall time in the test fixtures). `histogram` writes the same
summary, the same [left edge, right edge, count] rows under the same plugin metadata, counted with
`tf.histogram_fixed_width` (one pass, 0.018 s for that kernel). Bucket edges are TensorBoard's:
30 equal buckets from the minimum to the maximum, the maximum in the last one.
"""
import tensorflow as tf
from tensorboard.plugins.histogram import metadata

BUCKETS = 30


def histogram(name, data, step=None, buckets=BUCKETS):
    """Writes `data`'s histogram to the default summary writer, as `tf.summary.histogram` does;
    returns whether a summary was written."""
    with tf.summary.experimental.summary_scope(name, "histogram_summary", values=[data]) as (
            tag, _):
        return tf.summary.write(tag=tag, tensor=lambda: bucket_rows(data, buckets), step=step,
                                metadata=metadata.create_summary_metadata(None, None))


def bucket_rows(data, buckets=BUCKETS):
    """A float64 [buckets, 3] tensor of (left edge, right edge, count); all zeros for no data;
    one value: every bucket's edges at it and its count in the last bucket, as TensorBoard."""
    values = tf.cast(tf.reshape(data, [-1]), tf.float64)
    if tf.size(values) == 0:
        return tf.zeros([buckets, 3], tf.float64)
    low, high = tf.reduce_min(values), tf.reduce_max(values)
    if low == high:
        edges = tf.fill([buckets], high)
        counts = tf.concat([tf.zeros([buckets - 1], tf.float64),
                            [tf.cast(tf.size(values), tf.float64)]], 0)
        return tf.stack([edges, edges, counts], axis=1)
    counts = tf.cast(tf.histogram_fixed_width(values, tf.stack([low, high]), nbins=buckets),
                     tf.float64)
    edges = tf.concat([tf.linspace(low, high, buckets + 1)[:-1], [high]], 0)
    return tf.stack([edges[:-1], edges[1:], counts], axis=1)
