"""Reading the data: CIFAR-10 layouts, safe unpickling, locating and downloading, sharding
over ranks, and the tf.data pipeline."""
