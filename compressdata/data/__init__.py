"""Real data for the distiller: `load_source` (presets and one reader per source kind), `RealData`,
class-balanced sampling, streaming sources and ZCA whitening. A bank as a dataset is
`compressdata.dataset`, its exports `compressdata.serving`."""

from compressdata.data.real import RealData
from compressdata.data.sampler import BalancedSampler, ClassBalancedSampler
from compressdata.data.sources import load_source, source_from_hf_dataset

__all__ = ["BalancedSampler", "ClassBalancedSampler", "RealData", "load_source", "source_from_hf_dataset"]
