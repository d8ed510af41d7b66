//! pytorch-fid's FID Inception-v3 (pool3 features and logits), ported to candle.
