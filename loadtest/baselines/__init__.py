"""Reference servers the benchmark measures our hub against."""
