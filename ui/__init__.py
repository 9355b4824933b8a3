"""The only streamlit-aware helpers: shared state/sidebar, caches, widgets and plots."""
