build-asan/src/cli/cli_directory.o: src/cli/cli_directory.c \
 src/cli/cli_directory.h src/auth/password.h src/base/privs.h \
 src/directory/directory.h src/event/config.h
src/cli/cli_directory.h:
src/auth/password.h:
src/base/privs.h:
src/directory/directory.h:
src/event/config.h:
