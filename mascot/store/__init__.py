"""The database and the images folder: schema and migrations, queries, quota, likes, moderation, files, imaging."""
