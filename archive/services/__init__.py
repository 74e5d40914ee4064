"""The archive's business operations as plain functions; commands, views and serializers
call these and stay thin."""
