"""What a person can do, for every entry point: the page's handlers only adapt it to components."""
