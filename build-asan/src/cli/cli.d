build-asan/src/cli/cli.o: src/cli/cli.c src/cli/cli.h src/event/config.h \
 src/base/log.h src/cli/cli_directory.h
src/cli/cli.h:
src/event/config.h:
src/base/log.h:
src/cli/cli_directory.h:
