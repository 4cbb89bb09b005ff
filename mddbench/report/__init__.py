"""What records become for readers: leaderboards with their statistics, figures, publishing, `show`."""
