"""Settlement: meter data, baselines, delivered vs ordered flexibility per ISP, statements."""
